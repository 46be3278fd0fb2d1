//go:build !nodra

package cli

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"

	ucli "github.com/urfave/cli/v3"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/sriov-cdi/sriov-cdi/core/binding"
	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/dra"
	"github.com/sriov-cdi/sriov-cdi/plugin"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// draFlags are the plugin command's flags for pools with api: dra.
func draFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: "kubeconfig", Usage: "kubeconfig for the API server (DRA pools publish ResourceSlices and read ResourceClaims); empty: in-cluster", Sources: ucli.EnvVars("KUBECONFIG")},
		&ucli.StringFlag{Name: "node-name", Usage: "this node's name (the owner of its ResourceSlices; DaemonSets pass it with the downward API)", Sources: ucli.EnvVars("NODE_NAME")},
		&ucli.StringFlag{Name: "kubelet-plugins-dir", Value: kubeletplugin.KubeletPluginsDir, Usage: "kubelet's plugin directory; the DRA socket, checkpoint and metadata files go to <dir>/<driver>", Sources: ucli.EnvVars("SRIOV_CDI_KUBELET_PLUGINS_DIR")},
		&ucli.StringFlag{Name: "kubelet-registry-dir", Value: kubeletplugin.KubeletRegistryDir, Usage: "kubelet's plugin registration directory", Sources: ucli.EnvVars("SRIOV_CDI_KUBELET_REGISTRY_DIR")},
		&ucli.BoolFlag{Name: "dra-device-taints", Usage: "publish unhealthy DRA devices with a NoSchedule taint (the cluster needs the DRADeviceTaints feature gate); off: unhealthy devices are left out of the slices", Sources: ucli.EnvVars("SRIOV_CDI_DRA_DEVICE_TAINTS")},
		&ucli.Float64Flag{Name: "kube-api-qps", Value: 50, Usage: "API requests per second the DRA driver may make (client-go's default, 5, holds a 4,096-VF node's 33 first slices back 5 s); the API server's priority and fairness still applies", Sources: ucli.EnvVars("SRIOV_CDI_KUBE_API_QPS")},
		&ucli.IntFlag{Name: "kube-api-burst", Value: 100, Usage: "API requests the DRA driver may make at once above --kube-api-qps", Sources: ucli.EnvVars("SRIOV_CDI_KUBE_API_BURST")},
		&ucli.BoolFlag{Name: "dra-device-metadata", Value: true, Usage: "write KEP-5304 device metadata files (resource.kubernetes.io/pciBusID, ...) and inject them with each claim (KubeVirt reads them)", Sources: ucli.EnvVars("SRIOV_CDI_DRA_DEVICE_METADATA")},
	}
}

// startDRA starts the DRA driver when the config has pools with api: dra
// and hands it to the Manager (opts.DRA). trigger is called to re-read
// functions after a claim changed their driver. The returned func stops
// the driver.
func startDRA(ctx context.Context, cmd *ucli.Command, opts *plugin.Options, trigger func(string, sysfs.Address), fatal func(error), log *zap.Logger) (func(), error) {
	cfg, err := config.Load(opts.ConfigPath)
	if err != nil || !cfg.DRAPools() {
		return func() {}, nil // NewManager reports a bad config
	}
	if os.Getenv("GOGC") == "" {
		// The DRA front door's heap is mostly the resourceslice
		// controller's copies of every device (its desired slices, its
		// informer's, the API server's answers): at the device plugin's
		// GOGC=25 the collector runs every few slices while they are
		// published. Go's default instead: 4,096 VFs publish in 1.84 s
		// rather than 1.96 s (medians of 5 alternating runs, hostbench
		// -dra, 2 cores) for a peak RSS of ~155 MiB rather than ~122 MiB
		// (the chart's limit is 256 Mi).
		debug.SetGCPercent(100)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cmd.String("kubeconfig"))
	if err != nil {
		return nil, fmt.Errorf("DRA pools need the API server: %w (set --kubeconfig, or run in a pod with a service account)", err)
	}
	rc.QPS, rc.Burst = float32(cmd.Float64("kube-api-qps")), int(cmd.Int("kube-api-burst"))
	if rc.QPS <= 0 || rc.Burst <= 0 {
		return nil, fmt.Errorf("--kube-api-qps and --kube-api-burst must be positive (got %v and %d)", rc.QPS, rc.Burst)
	}
	// Protobuf, as kubelet and the scheduler talk: a slice of 128 devices
	// is ~200 KB of JSON for both sides to encode and decode.
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("DRA pools need the API server: %w", err)
	}
	var binder dra.Binder
	if fa, ok := opts.Prepare.(binding.ForAllocate); ok && fa.M != nil {
		binder = binding.ForClaim{M: fa.M}
	}
	drv, err := dra.Start(ctx, dra.Options{
		DriverName: cfg.ResourcePrefix, NodeName: cmd.String("node-name"), Client: client,
		PluginDir: cmd.String("kubelet-plugins-dir") + "/" + cfg.ResourcePrefix, RegistryDir: cmd.String("kubelet-registry-dir"),
		CDIDir: cmd.String("cdi-dir"), Root: opts.Root, Binder: binder, DeviceInfo: opts.DeviceInfo,
		Taints: cmd.Bool("dra-device-taints"), Metadata: cmd.Bool("dra-device-metadata"),
		Refresh: trigger, Fatal: fatal, Log: log.Named("dra"),
	})
	if err != nil {
		return nil, err
	}
	opts.DRA = drv
	return drv.Stop, nil
}
