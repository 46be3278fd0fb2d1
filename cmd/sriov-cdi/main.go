// Command sriov-cdi discovers SR-IOV and other PCI devices, serves them to
// kubelet as device plugins, writes their CDI specs and binds them to
// vfio-pci. See `sriov-cdi --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sriov-cdi/sriov-cdi/cmd/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.NewApp().Run(ctx, os.Args)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sriov-cdi:", err)
		os.Exit(1)
	}
}
