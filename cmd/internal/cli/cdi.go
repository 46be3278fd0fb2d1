package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	ucli "github.com/urfave/cli/v3"
	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/cdi"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

func cdiCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "cdi",
		Usage: "generate and validate CDI specs without running the plugin",
		Commands: []*ucli.Command{
			cdiGenerateCommand(),
			cdiValidateCommand(),
		},
	}
}

func cdiGenerateCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "generate",
		Usage: "write the CDI spec of every pool (one file per pool) for the devices present now",
		Description: "Scans the host, plans the pools of --config and writes one CDI spec per pool with devices into --output,\n" +
			"as the plugin would (world-readable, only when changed; spec files of ours for pools that are gone are removed).\n" +
			"--output - prints the specs as YAML instead (the default with --sample). Devices are not bound: a vfio device's /dev/vfio/<group> node\n" +
			"appears once it is bound to vfio-pci, and the runtime reads it when it injects the device.",
		Flags: append(hostFlags(),
			&ucli.BoolFlag{Name: flagSample, Usage: "use the bundled sysfs snapshot of a real kernel and its config; specs name the snapshot's host paths under /dev"},
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: cdi.DefaultDir, Usage: "spec directory, or - for YAML on stdout (the default with --sample: sample specs describe another host)", Sources: ucli.EnvVars("SRIOV_CDI_CDI_DIR")},
			&ucli.BoolFlag{Name: "no-iommufd", Usage: "leave /dev/vfio/devices/vfioN and /dev/iommu out of vfio devices (group interface only)", Sources: ucli.EnvVars("SRIOV_CDI_NO_IOMMUFD")},
			stateFileFlag(),
		),
		Action: func(_ context.Context, cmd *ucli.Command) error {
			in, err := loadHost(cmd)
			if err != nil {
				return err
			}
			defer in.cleanup()
			if in.cfg == nil {
				return errors.New("no pools: give --config FILE (or --sample)")
			}
			h, err := sysfs.Scan(in.root, scanOptions(in.root)...)
			if err != nil {
				return err
			}
			specRoot := in.root
			if cmd.Bool(flagSample) {
				// The snapshot is of a real host, whose /dev is /dev.
				specRoot.Dev = "/dev"
			}
			plan := pool.Build(in.cfg, h, pool.WithHeld(heldFrom(cmd, cmd.String(bindFlagStateFile))))
			var opts []cdi.SpecOption
			if cmd.Bool("no-iommufd") {
				opts = append(opts, cdi.WithoutIOMMUFD())
			}
			specs, err := cdi.SpecsFor(plan.Pools, h, specRoot, opts...)
			if err != nil {
				return err
			}
			for _, p := range plan.Pools {
				if len(p.Units) == 0 {
					fmt.Fprintf(cmd.Root().ErrWriter, "pool %q has no devices on this host: no spec (see `sriov-cdi discover`)\n", p.Name)
				}
			}
			out := cmd.String("output")
			if cmd.Bool(flagSample) && !cmd.IsSet("output") {
				// The snapshot's specs name another host's devices: they
				// belong on stdout unless a directory is named.
				out = "-"
			}
			if out != "-" {
				return cdiWriteSpecs(cmd.Root().Writer, out, specs)
			}
			return cdiPrintSpecs(cmd.Root().Writer, specs)
		},
	}
}

// cdiPrintSpecs prints specs as a YAML stream exactly as the CDI library
// writes them: each goes through the library's WriteSpec (which validates)
// in a scratch directory.
func cdiPrintSpecs(w io.Writer, specs []*cdispec.Spec) error {
	tmp, err := os.MkdirTemp("", "sriov-cdi-specs-")
	if err != nil {
		return fmt.Errorf("create scratch directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	cache, _ := cdilib.NewCache(cdilib.WithSpecDirs(tmp), cdilib.WithAutoRefresh(false))
	for i, s := range specs {
		name := fmt.Sprintf("spec-%d.yaml", i)
		if err := cache.WriteSpec(s, name); err != nil {
			return fmt.Errorf("generated spec of kind %q is invalid (a bug): %w", s.Kind, err)
		}
		b, err := os.ReadFile(filepath.Join(tmp, name))
		if err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

func cdiWriteSpecs(w io.Writer, dir string, specs []*cdispec.Spec) error {
	wr, err := cdi.NewWriter(dir, nil)
	if err != nil {
		return err
	}
	changed, err := wr.Sync(specs)
	if err != nil {
		return err
	}
	for _, s := range specs {
		name, _ := cdi.SpecFileName(s.Kind)
		fmt.Fprintf(w, "%s: kind %s, %d devices, cdiVersion %s\n", filepath.Join(dir, name), s.Kind, len(s.Devices), s.Version)
	}
	if !changed {
		fmt.Fprintln(w, "no change: the files already held these specs")
	}
	return nil
}

func cdiValidateCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "validate",
		Usage:     "check CDI spec files as the CDI library and runtimes load them",
		ArgsUsage: "FILE...",
		Description: "Each file is read and validated with the CDI library (cdiVersion known and sufficient, vendor/class/device\n" +
			"names, container edits, no duplicate devices). Devices defined by two of the given files are reported.\n" +
			"Notes (not errors): a cdiVersion newer than the content needs, and a mode non-root runtimes cannot read.",
		Action: func(_ context.Context, cmd *ucli.Command) error {
			files := cmd.Args().Slice()
			if len(files) == 0 {
				return errors.New("give at least one CDI spec file")
			}
			out := cmd.Root().Writer
			bad := 0
			seen := map[string]string{} // qualified device -> file
			for _, f := range files {
				spec, err := cdilib.ReadSpec(f, 0)
				if err != nil {
					bad++
					fmt.Fprintf(out, "%s: INVALID: %v\n", f, err)
					continue
				}
				var conflicts []string
				for _, d := range spec.Devices {
					q := parser.QualifiedName(spec.GetVendor(), spec.GetClass(), d.Name)
					if other, dup := seen[q]; dup {
						conflicts = append(conflicts, fmt.Sprintf("device %q is also defined in %s", q, other))
						continue
					}
					seen[q] = f
				}
				if len(conflicts) > 0 {
					bad++
					for _, c := range conflicts {
						fmt.Fprintf(out, "%s: INVALID: %s (a runtime rejects both when they are in one directory)\n", f, c)
					}
					continue
				}
				fmt.Fprintf(out, "%s: ok: kind %s, %d devices, cdiVersion %s\n", f, spec.Kind, len(spec.Devices), spec.Version)
				if need, err := cdispec.MinimumRequiredVersion(spec.Spec); err == nil && need != strings.TrimPrefix(spec.Version, "v") {
					fmt.Fprintf(out, "%s: note: cdiVersion %s is newer than the content needs (%s); runtimes with an older CDI library reject it\n", f, spec.Version, need)
				}
				if fi, err := os.Stat(f); err == nil && fi.Mode().Perm()&0o004 == 0 {
					fmt.Fprintf(out, "%s: note: mode %v: runtimes not running as root cannot read it (use 0644)\n", f, fi.Mode().Perm())
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d spec files invalid", bad, len(files))
			}
			return nil
		},
	}
}
