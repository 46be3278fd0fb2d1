package plugin

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/sriov-cdi/sriov-cdi/internal/procmem"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// fourPools splits the 8 PFs x 128 VFs fixture into 4 pools of 256 VFs.
const fourPools = `
pools:
  - {name: p0, mode: vfio, selectors: {rootDevices: ["0000:01:00.0", "0000:02:00.0"]}}
  - {name: p1, mode: vfio, selectors: {rootDevices: ["0000:03:00.0", "0000:04:00.0"]}}
  - {name: p2, mode: kernel, selectors: {rootDevices: ["0000:05:00.0", "0000:06:00.0"]}}
  - {name: p3, mode: kernel, selectors: {rootDevices: ["0000:07:00.0", "0000:08:00.0"]}}
`

// BenchmarkStartToFirstLists measures, for 1,024 VFs (8 PFs x 128) in 4
// pools, the time from process-level start (NewManager, Run) to kubelet
// holding the first device list of every pool: scan, plan, serve,
// Register (kubelet dials back), ListAndWatch.
func BenchmarkStartToFirstLists(b *testing.B) {
	dir := b.TempDir()
	bld := sysfstest.SRIOVNICHost(filepath.Join(dir, "host"), 8, 128)
	if err := bld.Write(); err != nil {
		b.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "cfg", "config.yaml")
	writeConfig(b, cfgPath, fourPools)
	for i := 0; b.Loop(); i++ {
		dp := filepath.Join(dir, fmt.Sprintf("dp%d", i))
		os.MkdirAll(dp, 0o755)
		k := startFakeKubelet(b, dp)
		mgr, err := NewManager(Options{ConfigPath: cfgPath, Root: sysfs.Root{Sys: bld.Sys(), Dev: bld.Dev()}, DevicePluginDir: dp, Log: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- mgr.Run(ctx) }()
		total := 0
		for range 4 {
			r := k.waitRegister(b, 10*time.Second)
			s, err := k.client(b, r).ListAndWatch(ctx, &pluginapi.Empty{})
			if err != nil {
				b.Fatal(err)
			}
			resp, err := s.Recv()
			if err != nil {
				b.Fatal(err)
			}
			total += len(resp.Devices)
		}
		if total != 1024 {
			b.Fatalf("listed %d devices, want 1024", total)
		}
		b.StopTimer()
		cancel()
		<-done
		k.stop()
		b.StartTimer()
	}
}

// BenchmarkAllocate measures Allocate over gRPC (no binding: kernel pool)
// for 1 and 8 devices and reports the 99th percentile, with and without
// Multus device-info files (written to /var/run, a tmpfs, in production;
// to the test's temporary directory here).
func BenchmarkAllocate(b *testing.B) {
	for _, devinfo := range []bool{false, true} {
		b.Run(fmt.Sprintf("deviceinfo=%v", devinfo), func(b *testing.B) { benchAllocate(b, devinfo) })
	}
}

func benchAllocate(b *testing.B, devinfo bool) {
	h := startHarness(b, 2, 16, `pools: [{name: vf, selectors: {devices: ["154c"]}}]`, nil, zap.NewNop(), func(_ string, o *Options) {
		o.RescanInterval = 5 * time.Second // the production default, not the tests' 50 ms
		if !devinfo {
			o.DeviceInfo = nil
		}
	})
	regs := h.registrations(b, 1)
	c := h.kubelet.client(b, regs["sriov-cdi.io/vf"])
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			ids := make([]string, n)
			for i := range n {
				ids[i] = fmt.Sprintf("0000:01:%02x.%d", (i+1)/8, (i+1)%8)
			}
			req := &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}}}
			var lat []time.Duration
			for b.Loop() {
				start := time.Now()
				if _, err := c.Allocate(context.Background(), req); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkChangeToUpdate measures the time from a change on the host (a
// VF's driver unbound in the fixture) to kubelet receiving the new list,
// with 1,024 VFs: announced like a kernel uevent naming the function
// (TriggerDevice: refresh of that function) and like an event naming none
// (Trigger: full rescan, the periodic safety net's cost).
func BenchmarkChangeToUpdate(b *testing.B) {
	for _, tc := range []struct {
		name string
		addr sysfs.Address
	}{{"uevent", "0000:05:00.1"}, {"full-rescan", ""}} {
		b.Run(tc.name, func(b *testing.B) { benchChangeToUpdate(b, tc.addr) })
	}
}

func benchChangeToUpdate(b *testing.B, addr sysfs.Address) {
	h := startHarness(b, 8, 128, fourPools, nil, zap.NewNop())
	h.mgr.opts.RescanInterval = time.Hour // only the trigger path counts
	regs := h.registrations(b, 4)
	s, err := h.kubelet.client(b, regs["sriov-cdi.io/p2"]).ListAndWatch(context.Background(), &pluginapi.Empty{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		b.Fatal(err)
	}
	host := filepath.Join(h.dir, "host")
	var lat []time.Duration
	for i := 0; b.Loop(); i++ {
		driver := ""
		if i%2 == 1 {
			driver = "iavf"
		}
		if err := sysfstest.SetDriver(host, "0000:05:00.1", driver); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		h.mgr.TriggerDevice("benchmark", addr)
		if _, err := s.Recv(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Milliseconds()), "p99-ms")
}

// BenchmarkKubeletRestartToRegister measures kubelet.sock creation to the
// plugin's Register arriving (fsnotify -> new socket -> Register).
func BenchmarkKubeletRestartToRegister(b *testing.B) {
	h := startHarness(b, 1, 4, `pools: [{name: vf, selectors: {rootDevices: ["0000:01:00.0"]}}]`, nil, zap.NewNop())
	h.registrations(b, 1)
	h.waitRegistrations(b, 1)
	var lat []time.Duration
	for i := 0; b.Loop(); i++ {
		created := h.kubelet.restart(b)
		h.kubelet.waitRegister(b, 5*time.Second)
		lat = append(lat, time.Since(created))
		b.StopTimer()
		h.waitRegistrations(b, i+2)
		b.StartTimer()
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Milliseconds()), "p99-ms")
}

// BenchmarkRSS runs the real binaries (built here) as the DaemonSet would
// — plugin with CDI specs, binding manager, metrics — over 1,024 VFs in 4
// pools, and reports peak RSS (VmHWM) and the anonymous and file-backed
// shares (Pss_Anon, Pss_File of smaps_rollup) once kubelet holds every list
// and a few rescans ran. bin=sriov-cdi-dp is what the chart runs for
// device-plugin pools (-tags nodra, no client-go; the bar is < 25 MiB);
// bin=sriov-cdi is the full binary with the DRA driver linked, run when a
// pool has api: dra. One iteration is enough; the figures are sizes, not
// times.
func BenchmarkRSS(b *testing.B) {
	dir := b.TempDir()
	bld := sysfstest.SRIOVNICHost(filepath.Join(dir, "host"), 8, 128)
	if err := bld.Write(); err != nil {
		b.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "cfg", "config.yaml")
	writeConfig(b, cfgPath, fourPools)
	for _, v := range []struct{ name, tags string }{{"sriov-cdi-dp", "nodra"}, {"sriov-cdi", ""}} {
		b.Run("bin="+v.name, func(b *testing.B) {
			bin := filepath.Join(dir, v.name)
			args := []string{"build", "-trimpath", "-ldflags", "-s -w", "-o", bin}
			if v.tags != "" {
				args = append(args, "-tags", v.tags)
			}
			build := exec.Command("go", append(args, "../cmd/sriov-cdi")...)
			build.Env = append(os.Environ(), "CGO_ENABLED=0") // as the image builds it
			if out, err := build.CombinedOutput(); err != nil {
				b.Fatalf("build: %v\n%s", err, out)
			}
			var hwm, anon, file int
			for i := 0; b.Loop(); i++ {
				work := filepath.Join(dir, fmt.Sprintf("%s-%d", v.name, i))
				dp := filepath.Join(work, "dp")
				os.MkdirAll(dp, 0o755)
				k := startFakeKubelet(b, dp)
				cmd := exec.Command(bin, "plugin", "--config", cfgPath, "--sysfs-root", bld.Sys(), "--dev-root", bld.Dev(),
					"--device-plugin-dir", dp, "--cdi-dir", filepath.Join(work, "cdi"), "--state-file", filepath.Join(work, "state.json"),
					"--health-addr", "", "--uevents=false", "--pod-resources-socket", "", "--device-info-dir", filepath.Join(work, "devinfo"),
					"--rescan-interval", "50ms", "--log-level", "error")
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				for range 4 {
					r := k.waitRegister(b, 10*time.Second)
					s, err := k.client(b, r).ListAndWatch(context.Background(), &pluginapi.Empty{})
					if err != nil {
						b.Fatal(err)
					}
					if _, err := s.Recv(); err != nil {
						b.Fatal(err)
					}
				}
				time.Sleep(300 * time.Millisecond) // a few rescans
				hwm = max(hwm, vmHWM(b, cmd.Process.Pid))
				a, f := pss(b, cmd.Process.Pid)
				anon, file = max(anon, a), max(file, f)
				cmd.Process.Signal(os.Interrupt)
				cmd.Wait()
				k.stop()
			}
			b.ReportMetric(float64(hwm)/1024, "peak-RSS-MiB")
			b.ReportMetric(float64(anon)/1024, "Pss_Anon-MiB")
			b.ReportMetric(float64(file)/1024, "Pss_File-MiB")
		})
	}
}

// pss returns Pss_Anon and Pss_File of process pid in KiB.
func pss(b *testing.B, pid int) (anon, file int) {
	anon, file, err := procmem.PSS(pid)
	if err != nil {
		b.Fatal(err)
	}
	return anon, file
}

func vmHWM(b *testing.B, pid int) int {
	kb, err := procmem.HWM(pid)
	if err != nil {
		b.Fatal(err)
	}
	return kb
}
