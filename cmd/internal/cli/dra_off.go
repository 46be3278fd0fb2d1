//go:build nodra

package cli

import (
	"context"
	"fmt"
	"strings"

	ucli "github.com/urfave/cli/v3"
	"go.uber.org/zap"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/plugin"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// A build with -tags nodra leaves the DRA driver (client-go, the
// kubeletplugin helper) out: the device-plugin-only binary the image ships
// as sriov-cdi-dp (22.7 MiB peak RSS at 1,024 VFs against 44.2 MiB; the
// difference is mostly client-go's binary pages touched at start). The
// chart runs it when no pool has api: dra.

func draFlags() []ucli.Flag { return nil }

func startDRA(_ context.Context, _ *ucli.Command, opts *plugin.Options, _ func(string, sysfs.Address), _ func(error), _ *zap.Logger) (func(), error) {
	cfg, err := config.Load(opts.ConfigPath)
	if err != nil || !cfg.DRAPools() {
		return func() {}, nil // NewManager reports a bad config
	}
	var names []string
	for _, p := range cfg.Pools {
		if p.API == config.APIDRA {
			names = append(names, p.Name)
		}
	}
	return nil, fmt.Errorf("config %q has pools with api: dra (%s), but this binary is the device-plugin-only build without DRA (sriov-cdi-dp, -tags nodra): run sriov-cdi, which serves device-plugin and DRA pools in one process (the chart picks it when a pool has api: dra)",
		opts.ConfigPath, strings.Join(names, ", "))
}
