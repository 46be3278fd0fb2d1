// Package cli assembles the sriov-cdi commands. Each command is a thin
// adapter from flags to the packages that do the work.
package cli

import (
	"context"
	"fmt"
	"os"
	"runtime"

	ucli "github.com/urfave/cli/v3"

	"github.com/sriov-cdi/sriov-cdi/cmd/internal/version"
	"github.com/sriov-cdi/sriov-cdi/core/binding"
	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sample"
)

// NewApp returns the root command.
func NewApp() *ucli.Command {
	return &ucli.Command{
		Name:  "sriov-cdi",
		Usage: "hand SR-IOV VFs and other PCI devices to pods: discovery, device plugin, CDI specs, vfio binding",
		Commands: []*ucli.Command{
			discoverCommand(),
			configCommand(),
			pluginCommand(),
			versionCommand(),
			bindCommand(), unbindCommand(), restoreCommand(),
			cdiCommand(),
			nriCommand(),
		},
		// --version/-v print what `version` prints; the root runs nothing
		// else, so without a command it shows help.
		Flags: []ucli.Flag{&ucli.BoolFlag{Name: "version", Aliases: []string{"v"}, Usage: "print the version", Local: true}},
		Action: func(ctx context.Context, cmd *ucli.Command) error {
			if cmd.Bool("version") {
				return printVersion(cmd)
			}
			return ucli.ShowRootCommandHelp(cmd)
		},
		// Errors are returned to main, which prints them once and exits 1.
		ExitErrHandler: func(context.Context, *ucli.Command, error) {},
	}
}

func versionCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(_ context.Context, cmd *ucli.Command) error {
			return printVersion(cmd)
		},
	}
}

func printVersion(cmd *ucli.Command) error {
	_, err := fmt.Fprintf(cmd.Root().Writer, "sriov-cdi %s (%s, %s/%s)\n", version.String(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}

// Flags shared by every command that reads the host; each is also read
// from an environment variable, for DaemonSets.
const (
	flagConfig    = "config"
	flagSysfsRoot = "sysfs-root"
	flagDevRoot   = "dev-root"
	flagSample    = "sample"
)

func hostFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: flagConfig, Usage: "pool configuration file (YAML or JSON; SR-IOV network device plugin JSON accepted)", Sources: ucli.EnvVars("SRIOV_CDI_CONFIG")},
		&ucli.StringFlag{Name: flagSysfsRoot, Value: "/sys", Usage: "where sysfs is mounted", Sources: ucli.EnvVars("SRIOV_CDI_SYSFS_ROOT")},
		&ucli.StringFlag{Name: flagDevRoot, Value: "/dev", Usage: "where devtmpfs is mounted", Sources: ucli.EnvVars("SRIOV_CDI_DEV_ROOT")},
	}
}

// stateFileFlag is the binding state file, read by the commands that plan
// pools: a unit sriov-cdi bound stays in its pool (pool.WithHeld).
func stateFileFlag() ucli.Flag {
	return &ucli.StringFlag{Name: bindFlagStateFile, Value: binding.DefaultStatePath, Usage: "where original drivers are recorded (shared with the plugin); a missing file means nothing is bound", Sources: ucli.EnvVars("SRIOV_CDI_STATE_FILE")}
}

// heldFrom reads which functions sriov-cdi bound, from path; nothing with
// --sample unless --state-file is given (the snapshot is another host).
func heldFrom(cmd *ucli.Command, path string) pool.Held {
	if cmd.Bool(flagSample) && !cmd.IsSet(bindFlagStateFile) {
		return nil
	}
	return binding.NewHoldings(path).Held()
}

// hostInput is what a host-reading command works on.
type hostInput struct {
	root    sysfs.Root
	cfg     *config.Config // nil when no config was given
	dir     string         // with --sample: the temporary directory it is unpacked in
	cleanup func()
}

// loadHost resolves --sample / --sysfs-root / --dev-root / --config.
// With --sample the bundled real-kernel snapshot is unpacked into a
// temporary directory and its config is used unless --config is given.
func loadHost(cmd *ucli.Command) (*hostInput, error) {
	in := &hostInput{root: sysfs.Root{Sys: cmd.String(flagSysfsRoot), Dev: cmd.String(flagDevRoot)}, cleanup: func() {}}
	cfgPath := cmd.String(flagConfig)
	if cmd.Bool(flagSample) {
		dir, err := os.MkdirTemp("", "sriov-cdi-sample-")
		if err != nil {
			return nil, fmt.Errorf("unpack the sample: %w", err)
		}
		in.dir, in.cleanup = dir, func() { os.RemoveAll(dir) }
		if in.root, err = sample.Extract(dir); err != nil {
			in.cleanup()
			return nil, err
		}
		if cfgPath == "" {
			if in.cfg, err = config.Parse("sample config (built in)", sample.Config()); err != nil {
				in.cleanup()
				return nil, err
			}
		}
	}
	if cfgPath != "" {
		cfg, err := config.Load(cfgPath)
		if err != nil {
			in.cleanup()
			return nil, err
		}
		in.cfg = cfg
	}
	return in, nil
}

// scanOptions adds live network inspection when the root is the host's.
func scanOptions(root sysfs.Root) []sysfs.ScanOption {
	if live := liveNet(root); live != nil {
		return []sysfs.ScanOption{sysfs.WithNetUsage(live.Current)}
	}
	return nil
}

// liveNet reads the host's network use over rtnetlink when the root is the
// host's; nil for a fixture tree (no live network state).
func liveNet(root sysfs.Root) *sysfs.LiveNet {
	if root.Sys == "/sys" {
		return sysfs.NewLiveNet()
	}
	return nil
}
