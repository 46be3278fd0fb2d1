package cli

import (
	"context"
	"fmt"
	"strings"

	ucli "github.com/urfave/cli/v3"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

func configCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "config",
		Usage: "work with pool configuration files",
		Commands: []*ucli.Command{{
			Name:      "validate",
			Usage:     "check config files; exits non-zero and names file, pool and field of every problem",
			ArgsUsage: "FILE...",
			Flags: []ucli.Flag{
				&ucli.StringFlag{Name: flagSysfsRoot, Usage: "also match the pools against this host's sysfs (e.g. /sys): a function that a deviceplugin pool and a dra pool both select is an error (kubelet would count it twice)"},
			},
			Action: func(_ context.Context, cmd *ucli.Command) error {
				files := cmd.Args().Slice()
				if len(files) == 0 {
					return fmt.Errorf("config validate: name at least one file")
				}
				var failed int
				for _, f := range files {
					c, err := config.Load(f)
					if err != nil {
						failed++
						fmt.Fprintln(cmd.Root().ErrWriter, err)
						continue
					}
					for _, w := range c.Warnings() {
						fmt.Fprintf(cmd.Root().ErrWriter, "%s: warning: %s\n", f, w)
					}
					format := "sriov-cdi"
					if c.Legacy {
						format = "SR-IOV network device plugin (mapped)"
					}
					if root := cmd.String(flagSysfsRoot); root != "" {
						if errs := crossAPIOverlaps(c, sysfs.Root{Sys: root}); len(errs) > 0 {
							failed++
							fmt.Fprintf(cmd.Root().ErrWriter, "config %q does not fit host %s:\n  - %s\n", f, root, strings.Join(errs, "\n  - "))
							continue
						}
					}
					fmt.Fprintf(cmd.Root().Writer, "%s: valid (%s format, %d pools)\n", f, format, len(c.Pools))
					for i := range c.Pools {
						p := &c.Pools[i]
						fmt.Fprintf(cmd.Root().Writer, "  %s mode=%s policy=%s api=%s\n", c.Resource(p), p.Mode, p.AllocationPolicy, p.API)
					}
				}
				if failed > 0 {
					return fmt.Errorf("%d of %d config files are invalid", failed, len(files))
				}
				return nil
			},
		}},
	}
}

// crossAPIOverlaps scans the host and returns, per function, why a
// deviceplugin pool and a dra pool both selecting it is refused (the
// planner's own words), or the scan error.
func crossAPIOverlaps(c *config.Config, root sysfs.Root) []string {
	h, err := sysfs.Scan(root)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, r := range pool.Build(c, h).Unselected {
		if strings.Contains(r.Reason, pool.CrossAPIRefusal) {
			out = append(out, string(r.Address)+": "+r.Reason)
		}
	}
	return out
}
