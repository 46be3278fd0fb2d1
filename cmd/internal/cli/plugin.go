package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	ucli "github.com/urfave/cli/v3"
	"go.uber.org/zap"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/sriov-cdi/sriov-cdi/cdi"

	"github.com/sriov-cdi/sriov-cdi/core/binding"
	"github.com/sriov-cdi/sriov-cdi/core/deviceinfo"
	"github.com/sriov-cdi/sriov-cdi/plugin"
	"github.com/sriov-cdi/sriov-cdi/plugin/metrics"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

func pluginCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "plugin",
		Usage: "serve every pool to kubelet as a device plugin (the DaemonSet's main process)",
		Flags: append(append(append(hostFlags(), logFlags()...), draFlags()...),
			&ucli.StringFlag{Name: "device-plugin-dir", Value: "/var/lib/kubelet/device-plugins", Usage: "kubelet's device plugin directory", Sources: ucli.EnvVars("SRIOV_CDI_DEVICE_PLUGIN_DIR")},
			&ucli.StringFlag{Name: "cdi-dir", Value: "/var/run/cdi", Usage: "where CDI specs are written", Sources: ucli.EnvVars("SRIOV_CDI_CDI_DIR")},
			&ucli.StringFlag{Name: "state-file", Value: "/var/lib/sriov-cdi/state.json", Usage: "binding state (original drivers, operation in flight)", Sources: ucli.EnvVars("SRIOV_CDI_STATE_FILE")},
			&ucli.StringFlag{Name: "health-addr", Value: ":8082", Usage: "address of /healthz, /readyz and /metrics (empty: off)", Sources: ucli.EnvVars("SRIOV_CDI_HEALTH_ADDR")},
			&ucli.DurationFlag{Name: "rescan-interval", Value: 5 * time.Second, Usage: "safety-net rescan period", Sources: ucli.EnvVars("SRIOV_CDI_RESCAN_INTERVAL")},
			&ucli.StringFlag{Name: "device-info-dir", Value: deviceinfo.DefaultDir, Usage: "where Multus device-info files for allocated network VFs go (empty: none)", Sources: ucli.EnvVars("SRIOV_CDI_DEVICE_INFO_DIR")},
			&ucli.StringFlag{Name: "proc-root", Usage: "the host's /proc (hostPID, or the host's /proc mounted), where the release watcher sees which processes hold /dev/vfio/<group> open (default: /proc with --sysfs-root /sys; empty with another root)", Sources: ucli.EnvVars("SRIOV_CDI_PROC_ROOT")},
			&ucli.StringFlag{Name: "pod-resources-socket", Value: "/var/lib/kubelet/pod-resources/kubelet.sock", Usage: "kubelet's PodResources API, to learn which devices were released (empty: never restore on release)", Sources: ucli.EnvVars("SRIOV_CDI_POD_RESOURCES_SOCKET")},
			&ucli.BoolFlag{Name: "uevents", Value: true, Usage: "react to kernel uevents (needs the host network namespace)", Sources: ucli.EnvVars("SRIOV_CDI_UEVENTS")},
			&ucli.DurationFlag{Name: "release-poll", Value: plugin.DefaultReleaseTiming().Poll, Usage: "how often kubelet's PodResources API is asked which devices are assigned", Sources: ucli.EnvVars("SRIOV_CDI_RELEASE_POLL")},
			&ucli.DurationFlag{Name: "release-grace", Value: plugin.DefaultReleaseTiming().Grace, Usage: "how long an allocated device may go unlisted by kubelet before it can count as released (kubelet records an assignment after Allocate)", Sources: ucli.EnvVars("SRIOV_CDI_RELEASE_GRACE")},
			&ucli.IntFlag{Name: "release-lists", Value: binding.DefaultReleaseRule().Lists, Usage: "consecutive PodResources answers that must lack a device before it is released", Sources: ucli.EnvVars("SRIOV_CDI_RELEASE_LISTS")},
			&ucli.DurationFlag{Name: "release-span", Value: binding.DefaultReleaseRule().Span, Usage: "how long a device must stay absent from PodResources answers before it is released", Sources: ucli.EnvVars("SRIOV_CDI_RELEASE_SPAN")},
			&ucli.DurationFlag{Name: "release-settle", Value: binding.DefaultReleaseRule().Settle, Usage: "after a kubelet (re)start, how long its PodResources answers count for nothing (they may be incomplete)", Sources: ucli.EnvVars("SRIOV_CDI_RELEASE_SETTLE")},
		),
		Action: func(ctx context.Context, cmd *ucli.Command) error {
			if os.Getenv("GOGC") == "" {
				// A long-running node agent: trade a little GC work (each
				// rescan allocates ~2 MB for 1,024 VFs) for a smaller
				// footprint; GOGC overrides it.
				debug.SetGCPercent(25)
			}
			log, err := newLogger(cmd)
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck
			if cmd.String(flagConfig) == "" {
				return fmt.Errorf("plugin: --config is required")
			}
			root := sysfs.Root{Sys: cmd.String(flagSysfsRoot), Dev: cmd.String(flagDevRoot)}
			opts := plugin.Options{
				ConfigPath:      cmd.String(flagConfig),
				Root:            root,
				DevicePluginDir: cmd.String("device-plugin-dir"),
				RescanInterval:  cmd.Duration("rescan-interval"),
				Uevents:         cmd.Bool("uevents"),
				Release: plugin.ReleaseTiming{
					Poll: cmd.Duration("release-poll"), Grace: cmd.Duration("release-grace"),
					Rule: binding.ReleaseRule{Lists: int(cmd.Int("release-lists")), Span: cmd.Duration("release-span"), Settle: cmd.Duration("release-settle")},
				}.WithDefaults(),
				Metrics: metrics.New(),
				Log:     log,
			}
			if live := liveNet(root); live != nil {
				// Scans answer from the last rtnetlink dump until an event
				// says something changed; the events also trigger a re-read
				// of the function owning the netdev.
				opts.ScanOptions = []sysfs.ScanOption{sysfs.WithNetUsage(live.Current)}
				opts.NetEvents = live
			}
			if dir := cmd.String("device-info-dir"); dir != "" {
				opts.DeviceInfo = &deviceinfo.Writer{Dir: dir}
			}
			closeWiring, err := wirePlugin(ctx, cmd, &opts, log)
			if err != nil {
				return err
			}
			defer closeWiring() // after Run: its shutdown still asks PodResources
			ctx, cancel := context.WithCancelCause(ctx)
			defer cancel(nil)
			var mp atomic.Pointer[plugin.Manager] // set once the Manager exists; claims may come earlier
			stopDRA, err := startDRA(ctx, cmd, &opts, func(reason string, a sysfs.Address) {
				if m := mp.Load(); m != nil {
					m.TriggerDevice(reason, a)
				}
			}, func(err error) { cancel(err) }, log)
			if err != nil {
				return err
			}
			defer stopDRA()
			m, err := plugin.NewManager(opts)
			if err != nil {
				return err
			}
			mp.Store(m)
			if addr := cmd.String("health-addr"); addr != "" {
				lis, err := net.Listen("tcp", addr)
				if err != nil {
					return fmt.Errorf("health endpoint: %w", err)
				}
				srv := &http.Server{Handler: plugin.HealthHandler(m), ReadHeaderTimeout: 5 * time.Second}
				go func() {
					if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
						cancel(fmt.Errorf("health endpoint: %w", err))
					}
				}()
				defer srv.Close()
				log.Info("health endpoint listening", zap.String("addr", lis.Addr().String()))
			}
			if err := m.Run(ctx); err != nil {
				return err
			}
			if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
				return cause
			}
			return nil
		},
	}
}

var _ plugin.SpecSyncer = cdi.PlanSyncer{}

// wirePlugin connects the CDI spec writer, the vfio binder and the
// release watcher to the plugin. The returned func closes what it opened
// (the PodResources connection); call it after the plugin stopped, whose
// shutdown still asks kubelet which devices are assigned.
func wirePlugin(ctx context.Context, cmd *ucli.Command, opts *plugin.Options, log *zap.Logger) (func(), error) {
	w, err := cdi.NewWriter(cmd.String("cdi-dir"), log.Named("cdi"))
	if err != nil {
		return nil, err
	}
	opts.Specs = cdi.PlanSyncer{W: w, Root: opts.Root}

	mt := opts.Metrics
	bopts := []binding.Option{binding.WithContext(ctx), binding.DegradeOnBadStateFile(), binding.WithObserver(func(op string, d time.Duration, err error) {
		result := "ok"
		if err != nil {
			result = "error"
		}
		mt.BindOps.WithLabelValues(op, result).Inc()
		mt.BindSeconds.WithLabelValues(op).Observe(d.Seconds())
	})}
	if live := liveNet(opts.Root); live != nil {
		bopts = append(bopts, binding.WithNetUsage(live.Fresh)) // never a cached answer for a bind
	}
	if fault := os.Getenv("SRIOV_CDI_FAULT"); fault != "" {
		bopts = append(bopts, binding.WithFault(fault))
	}
	if cmd.IsSet("proc-root") {
		bopts = append(bopts, binding.WithProcRoot(cmd.String("proc-root")))
	}
	bm, err := binding.NewManager(opts.Root, cmd.String("state-file"), log.Named("binding"), bopts...)
	if err != nil {
		return nil, err
	}
	opts.Prepare = binding.ForAllocate{M: bm}
	opts.Holdings = binding.NewHoldings(cmd.String("state-file"))

	if sock := cmd.String("pod-resources-socket"); sock != "" {
		conn, err := binding.DialPodResources(sock)
		if err != nil {
			return nil, err
		}
		opts.PodResources = podresourcesv1.NewPodResourcesListerClient(conn)
		rt := opts.Release
		rw := binding.NewWatcher(bm, podresourcesv1.NewPodResourcesListerClient(conn), log.Named("release"), rt.Poll, rt.Grace,
			binding.WithPodResourcesSocket(sock), binding.WithReleaseRule(rt.Rule))
		opts.OnRegistered = rw.KubeletRestarted // kubelet (re)started: its first answers may be incomplete
		go func() {
			if err := rw.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("release watcher stopped; released devices stay bound", zap.Error(err))
			}
		}()
		return func() { _ = conn.Close() }, nil
	}
	return func() {}, nil
}
