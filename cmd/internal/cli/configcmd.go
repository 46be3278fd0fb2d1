package cli

import (
	"context"
	"fmt"

	ucli "github.com/urfave/cli/v3"

	"github.com/sriov-cdi/sriov-cdi/core/config"
)

func configCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "config",
		Usage: "work with pool configuration files",
		Commands: []*ucli.Command{{
			Name:      "validate",
			Usage:     "check config files; exits non-zero and names file, pool and field of every problem",
			ArgsUsage: "FILE...",
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
					fmt.Fprintf(cmd.Root().Writer, "%s: valid (%s format, %d pools)\n", f, format, len(c.Pools))
					for i := range c.Pools {
						p := &c.Pools[i]
						fmt.Fprintf(cmd.Root().Writer, "  %s mode=%s policy=%s\n", c.Resource(p), p.Mode, p.AllocationPolicy)
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
