package cli

import (
	"context"
	"fmt"
	"slices"
	"time"

	ucli "github.com/urfave/cli/v3"
	"go.uber.org/zap"
	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"

	crinri "github.com/sriov-cdi/sriov-cdi/cdi/nri"
)

func nriCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "nri",
		Usage: "run the NRI plugin that keeps a CDI device from being injected twice (Kata with pod_annotations)",
		Description: "Connects to the container runtime's NRI socket (containerd 2.x, CRI-O) and, at CreateContainer, removes\n" +
			"cdi.k8s.io/* annotations for devices of ours (kinds whose spec sriov-cdi wrote into --cdi-spec-dirs) that the\n" +
			"pod sandbox also carries or whose devices are already in the container, and another vendor's only when its\n" +
			"devices are exactly in the container already (--all-vendors: every vendor's like ours). Folds identical\n" +
			"duplicate device entries; logs entries that differ for one path as a conflict. Reconnects when the runtime\n" +
			"restarts. See cdi/RUNTIMES.md.",
		Flags: append(logFlags(),
			&ucli.StringFlag{Name: "socket", Value: crinri.DefaultSocketPath, Usage: "the runtime's NRI socket", Sources: ucli.EnvVars("SRIOV_CDI_NRI_SOCKET")},
			&ucli.StringFlag{Name: "plugin-name", Value: crinri.DefaultPluginName, Usage: "NRI plugin name", Sources: ucli.EnvVars("SRIOV_CDI_NRI_PLUGIN_NAME")},
			&ucli.StringFlag{Name: "plugin-index", Value: crinri.DefaultPluginIdx, Usage: "NRI plugin index, two digits: the order among plugins", Sources: ucli.EnvVars("SRIOV_CDI_NRI_PLUGIN_INDEX")},
			&ucli.StringSliceFlag{Name: "cdi-spec-dirs", Value: slices.Clone(cdilib.DefaultSpecDirs), Usage: "CDI spec directories to resolve annotation devices in", Sources: ucli.EnvVars("SRIOV_CDI_CDI_SPEC_DIRS")},
			&ucli.BoolFlag{Name: "all-vendors", Usage: "also remove other vendors' cdi.k8s.io/* annotations the pod sandbox carries or whose device nodes and variables are in the container", Sources: ucli.EnvVars("SRIOV_CDI_NRI_ALL_VENDORS")},
			&ucli.DurationFlag{Name: "retry-interval", Value: time.Second, Usage: "first delay before reconnecting to the runtime (doubles up to 30s)", Sources: ucli.EnvVars("SRIOV_CDI_NRI_RETRY_INTERVAL")},
		),
		Action: func(ctx context.Context, cmd *ucli.Command) error {
			idx := cmd.String("plugin-index")
			if len(idx) != 2 || idx[0] < '0' || idx[0] > '9' || idx[1] < '0' || idx[1] > '9' {
				return fmt.Errorf("--plugin-index %q: use two digits, e.g. %q", idx, crinri.DefaultPluginIdx)
			}
			log, err := newLogger(cmd)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			dirs := cmd.StringSlice("cdi-spec-dirs")
			// Auto-refresh: the cache follows spec files as they change, and
			// with them which kinds are ours.
			specs, _ := cdilib.NewCache(cdilib.WithSpecDirs(dirs...))
			log.Info("starting NRI plugin", zap.String("socket", cmd.String("socket")), zap.String("plugin", idx+"-"+cmd.String("plugin-name")),
				zap.Strings("cdiSpecDirs", dirs), zap.Bool("allVendors", cmd.Bool("all-vendors")))
			return crinri.Run(ctx, log, specs, crinri.Options{
				AllVendors:    cmd.Bool("all-vendors"),
				SocketPath:    cmd.String("socket"),
				PluginName:    cmd.String("plugin-name"),
				PluginIdx:     idx,
				RetryInterval: cmd.Duration("retry-interval"),
			})
		},
	}
}
