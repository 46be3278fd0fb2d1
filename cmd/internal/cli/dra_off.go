//go:build nodra

package cli

import (
	"context"
	"fmt"

	ucli "github.com/urfave/cli/v3"
	"go.uber.org/zap"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/plugin"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// A build with -tags nodra leaves the DRA driver (client-go, the
// kubeletplugin helper) out: the device-plugin-only binary, ~20 MiB less
// resident.

func draFlags() []ucli.Flag { return nil }

func startDRA(_ context.Context, _ *ucli.Command, opts *plugin.Options, _ func(string, sysfs.Address), _ func(error), _ *zap.Logger) (func(), error) {
	if cfg, err := config.Load(opts.ConfigPath); err == nil && cfg.DRAPools() {
		return nil, fmt.Errorf("config %q has pools with api: dra, but this sriov-cdi was built without DRA (-tags nodra)", opts.ConfigPath)
	}
	return func() {}, nil
}
