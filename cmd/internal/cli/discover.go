package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/jaypipes/pcidb"
	ucli "github.com/urfave/cli/v3"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/core/vhostuser"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

func discoverCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "discover",
		Usage: "show the PCI functions of the host and what each pool would hand out, and why the rest is not",
		Flags: append(hostFlags(),
			&ucli.BoolFlag{Name: flagSample, Usage: "use the bundled sysfs snapshot of a real kernel (QEMU, 2 SR-IOV NVMe PFs) and its config"},
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "table or json"},
			stateFileFlag(),
		),
		Action: func(_ context.Context, cmd *ucli.Command) error {
			format := cmd.String("output")
			if format != "table" && format != "json" {
				return fmt.Errorf("--output %q: use table or json", format)
			}
			in, err := loadHost(cmd)
			if err != nil {
				return err
			}
			defer in.cleanup()
			h, err := sysfs.Scan(in.root, scanOptions(in.root)...)
			if err != nil {
				return err
			}
			rep := newReport(h, in.cfg, pciNames(h), heldFrom(cmd, cmd.String(bindFlagStateFile)))
			if format == "json" {
				enc := json.NewEncoder(cmd.Root().Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return rep.writeTable(cmd.Root().Writer)
		},
	}
}

// report is the output of discover.
type report struct {
	Devices    []*sysfs.Device   `json:"devices"`
	Names      map[string]string `json:"names,omitempty"` // "vvvv:dddd" -> "Vendor Product", when pci.ids is found
	Pools      []pool.Pool       `json:"pools"`
	Unselected []pool.Refusal    `json:"unselected"`
	Notes      []pool.Refusal    `json:"notes,omitempty"`
	Warnings   []sysfs.Warning   `json:"warnings"`
	Config     string            `json:"config,omitempty"`
}

func newReport(h *sysfs.Host, cfg *config.Config, names map[string]string, held pool.Held) *report {
	r := &report{Devices: h.Devices, Names: names, Warnings: h.Warnings, Pools: []pool.Pool{}, Unselected: []pool.Refusal{}}
	if r.Warnings == nil {
		r.Warnings = []sysfs.Warning{}
	}
	if cfg != nil {
		plan := pool.Build(cfg, h, pool.WithHeld(held))
		r.Pools, r.Unselected, r.Notes, r.Config = plan.Pools, plan.Unselected, plan.Notes, cfg.Source
	}
	return r
}

func (r *report) writeTable(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	if r.Config == "" {
		fmt.Fprintln(w, "PCI functions (no --config given: pools not planned)")
		fmt.Fprintln(w, "ADDRESS\tID\tCLASS\tDRIVER\tGROUP\tNUMA\tPF/VF\tNETDEV\tNAME")
		for _, d := range r.Devices {
			fmt.Fprintf(w, "%s\t%s:%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Address, d.Vendor, d.Device, d.Class, dash(d.Driver), dash(d.IOMMUGroup),
				numa(d.NUMANode), pfvf(d), dash(netdevNames(d)), dash(r.Names[d.Vendor+":"+d.Device]))
		}
	} else {
		fmt.Fprintf(w, "Pools from %s\n", r.Config)
		fmt.Fprintln(w, "RESOURCE\tMODE\tDEVICE\tPF/VF\tDRIVER\tGROUP\tMEMBERS\tNUMA\tNETDEV\tHEALTH")
		for _, p := range r.Pools {
			if len(p.Units) == 0 {
				fmt.Fprintf(w, "%s\t%s\t(none)\t\t\t\t\t\t\t\n", p.Resource, p.Mode)
			}
			for _, u := range p.Units {
				health := "healthy"
				if !u.Healthy {
					health = "UNHEALTHY: " + u.Reason
				}
				var members []string
				for _, m := range u.Members {
					members = append(members, string(m))
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Resource, p.Mode, u.ID, unitPFVF(u), dash(u.Driver), dash(u.Group),
					strings.Join(members, ","), numa(u.NUMANode), dash(strings.Join(u.Netdevs, ",")), health)
			}
		}
		writeVhostUser(w, r.Pools)
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Not handed out")
		fmt.Fprintln(w, "ADDRESS\tMATCHED POOL\tREASON")
		for _, u := range r.Unselected {
			fmt.Fprintf(w, "%s\t%s\t%s\n", u.Address, dash(u.Pool), u.Reason)
		}
		if len(r.Notes) > 0 {
			fmt.Fprintln(w)
			fmt.Fprintln(w, "Notes")
			for _, n := range r.Notes {
				fmt.Fprintf(w, "%s\t%s\t%s\n", n.Address, n.Pool, n.Reason)
			}
		}
	}
	if len(r.Warnings) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Warnings (functions skipped or partly read)")
		for _, warn := range r.Warnings {
			fmt.Fprintf(w, "%s\t%s\n", warn.Device, warn.Message)
		}
	}
	return w.Flush()
}

// writeVhostUser lists, for vhost-user pools, where each slot's directory
// is made on the host and where its socket appears in a container, and
// whether the base directory is usable now.
func writeVhostUser(w io.Writer, pools []pool.Pool) {
	header := false
	for _, p := range pools {
		if p.Mode != config.ModeVhostUser || p.Config == nil || p.Config.VhostUser == nil {
			continue
		}
		if !header {
			fmt.Fprintln(w)
			fmt.Fprintln(w, "vhost-user slots (directory made at Allocate, removed on release)")
			fmt.Fprintln(w, "RESOURCE\tDEVICE\tHOST DIRECTORY\tCONTAINER SOCKET\tSOCKET MODE")
			header = true
		}
		l := vhostuser.LayoutFor(p.Resource, p.Config)
		for _, u := range p.Units {
			a, err := l.Describe(string(u.ID))
			if err != nil {
				fmt.Fprintf(w, "%s\t%s\t%v\t\t\n", p.Resource, u.ID, err)
				continue
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", p.Resource, u.ID, a.HostDir, a.ContainerSocket, l.SocketMode)
		}
		if d, err := vhostuser.New(l); err == nil {
			if err := d.Check(); err != nil {
				fmt.Fprintf(w, "WARNING: %s: %v\n", p.Resource, err)
			}
		}
	}
}

func numa(n int) string {
	if n < 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func pfvf(d *sysfs.Device) string {
	switch {
	case d.IsVF():
		return fmt.Sprintf("VF %d of %s", d.VFIndex, d.PhysFn)
	case d.SRIOV != nil:
		return fmt.Sprintf("PF %d/%d VFs", d.SRIOV.NumVFs, d.SRIOV.TotalVFs)
	}
	return "-"
}

func unitPFVF(u pool.Unit) string {
	if u.PF == "" {
		return "-"
	}
	return fmt.Sprintf("%s/%d", u.PF, u.VFIndex)
}

func netdevNames(d *sysfs.Device) string {
	var names []string
	for _, n := range d.Netdevs {
		names = append(names, n.Name)
	}
	return strings.Join(names, ",")
}

// pciNames looks up display names in a pci.ids database when one is
// installed; discovery never depends on it.
func pciNames(h *sysfs.Host) map[string]string {
	db, err := pcidb.New()
	if err != nil {
		return nil
	}
	names := map[string]string{}
	for _, d := range h.Devices {
		key := d.Vendor + ":" + d.Device
		if _, done := names[key]; done {
			continue
		}
		if p, ok := db.Products[d.Vendor+d.Device]; ok {
			v := ""
			if vendor, ok := db.Vendors[d.Vendor]; ok {
				v = vendor.Name + " "
			}
			names[key] = v + p.Name
		}
	}
	return names
}
