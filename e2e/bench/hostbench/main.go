// Command hostbench measures sriov-cdi on the production path, as the
// DaemonSet runs it, on a synthetic host: a sysfs tree written by
// sysfstest, bind-mounted over /sys, a tmpfs /dev holding the tree's
// /dev/vfio, one dummy link per netdev of the tree (iproute2), and the
// real binary started with the DaemonSet's environment. It stands in for
// kubelet (Registration service, ListAndWatch, Allocate) and prints one
// markdown table row.
//
// It changes mounts and network links: run it only inside a private mount
// and network namespace (e2e/bench/host.sh runs it under
// `unshare --mount --net --fork`).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/sriov-cdi/sriov-cdi/internal/procmem"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

const (
	vfsPerPF = 128
	vfioVFs  = 64 // VFs 0-63 of PF 0, already bound to vfio-pci
	vfioPool = "sriov-cdi.io/vf-vfio"
	kernPool = "sriov-cdi.io/vf-kernel"
	tick     = 5 * time.Second // the DaemonSet's rescan interval
)

const config = `pools:
  - {name: vf-vfio, mode: vfio, selectors: {rootDevices: ["0000:01:00.0#0-63"]}}
  - {name: vf-kernel, mode: kernel, selectors: {devices: ["154c"], drivers: ["iavf"]}}
`

func main() {
	bin := flag.String("bin", "", "the sriov-cdi binary")
	vfs := flag.Int("vfs", 1024, "number of VFs (a multiple of 128)")
	work := flag.String("work", "", "work directory (created)")
	noLive := flag.Bool("no-live", false, "point --sysfs-root/--dev-root at the tree (no live checks) instead of mounting it over /sys")
	ticks := flag.Int("ticks", 3, "quiet rescan periods to measure CPU over")
	allocBudget := flag.Duration("alloc-budget", 20*time.Second, "time allowed per Allocate series (at least 3 calls)")
	flag.DurationVar(&startTimeout, "start-timeout", 10*time.Minute, "give up waiting for every pool's list after this long")
	printHeader := flag.Bool("header", false, "print the table header and exit")
	draMode := flag.Bool("dra", false, "measure the DRA front door: the pools get api: dra, published to a real kube-apiserver (-kube-apiserver, -etcd) started in this network namespace")
	apiserverBin := flag.String("kube-apiserver", "", "the kube-apiserver binary (-dra)")
	etcdBin := flag.String("etcd", "", "the etcd binary (-dra)")
	watchSlicesMode := flag.Bool("watch-slices", false, "internal (-dra): watch the driver's ResourceSlices and print one line per event")
	flag.Parse()
	if *watchSlicesMode {
		if err := watchSlicesMain(); err != nil {
			fmt.Fprintf(os.Stderr, "hostbench -watch-slices: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if *printHeader {
		if *draMode {
			fmt.Println(draHeader)
		} else {
			fmt.Println(header)
		}
		return
	}
	if *bin == "" || *work == "" || *vfs%vfsPerPF != 0 || *vfs < 2*vfsPerPF {
		fmt.Fprintln(os.Stderr, "hostbench: -bin, -work and -vfs (a multiple of 128, at least 256) are required")
		os.Exit(2)
	}
	var row string
	var err error
	if *draMode {
		if *apiserverBin == "" || *etcdBin == "" {
			fmt.Fprintln(os.Stderr, "hostbench: -dra needs -kube-apiserver and -etcd")
			os.Exit(2)
		}
		row, err = runDRA(*bin, *work, *vfs, *noLive, *apiserverBin, *etcdBin)
	} else {
		row, err = run(*bin, *work, *vfs, *noLive, *ticks, *allocBudget)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "hostbench: %d VFs: %v\n", *vfs, err)
		os.Exit(1)
	}
	fmt.Println(row)
}

type result struct {
	vfs, netdevs         int
	startToLists         time.Duration
	allocKernel          []time.Duration
	allocVFIO            []time.Duration
	allocKernelErr       error
	allocVFIOErr         error
	uevent, link         []time.Duration
	tickCPU              time.Duration
	specWrites           int
	hwmKiB               int
	pssAnon, pssFile     int // KiB, smaps_rollup at the end
	bin                  string
	startTimedOut, noUpd bool
}

// host is the synthetic host a run measures on.
type host struct {
	work, hostDir    string
	b                *sysfstest.Builder
	netdevs          []string
	sysRoot, devRoot string // what the plugin's --sysfs-root / --dev-root get
}

// setupHost writes the tree of vfs VFs on a tmpfs at work, mounts it over
// /sys (unless noLive), makes the links and the plugin's directories.
func setupHost(work string, vfs int, noLive bool) (*host, error) {
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	// Everything lives on a tmpfs of this mount namespace, like /sys in
	// memory, and goes away with the namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("make mounts private (run inside unshare --mount): %w", err)
	}
	if err := unix.Mount("tmpfs", work, "tmpfs", 0, "mode=755"); err != nil {
		return nil, fmt.Errorf("tmpfs on %q: %w", work, err)
	}
	h := &host{work: work, hostDir: filepath.Join(work, "host")}
	h.b, h.netdevs = buildTree(h.hostDir, vfs/vfsPerPF)
	if err := h.b.Write(); err != nil {
		return nil, fmt.Errorf("write tree: %w", err)
	}
	h.sysRoot, h.devRoot = "/sys", "/dev"
	if noLive {
		h.sysRoot, h.devRoot = h.b.Sys(), h.b.Dev()
	} else if err := mountHost(work, h.b.Sys(), h.b.Dev()); err != nil {
		return nil, err
	}
	if err := makeLinks(h.netdevs); err != nil {
		return nil, err
	}
	for _, d := range []string{"dp", "cdi", "devinfo", "cfg", "pod-resources"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o755); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// startPlugin starts `bin plugin` with env, its output in work/plugin.log;
// stop sends SIGTERM and waits for it.
func startPlugin(bin, work string, env []string) (cmd *exec.Cmd, start time.Time, stop func(), err error) {
	logf, err := os.Create(filepath.Join(work, "plugin.log"))
	if err != nil {
		return nil, start, nil, err
	}
	cmd = exec.Command(bin, "plugin")
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	start = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, start, nil, err
	}
	return cmd, start, func() {
		cmd.Process.Signal(unix.SIGTERM)
		cmd.Wait()
		logf.Close()
	}, nil
}

// daemonSetEnv is the DaemonSet's environment
// (deployments/helm/sriov-cdi/templates/daemonset.yaml) on host h.
func (h *host) daemonSetEnv(cfg string) []string {
	return append(os.Environ(),
		"SRIOV_CDI_CONFIG="+cfg,
		"SRIOV_CDI_SYSFS_ROOT="+h.sysRoot,
		"SRIOV_CDI_DEV_ROOT="+h.devRoot,
		"SRIOV_CDI_DEVICE_PLUGIN_DIR="+filepath.Join(h.work, "dp"),
		"SRIOV_CDI_CDI_DIR="+filepath.Join(h.work, "cdi"),
		"SRIOV_CDI_STATE_FILE="+filepath.Join(h.work, "state.json"),
		"SRIOV_CDI_POD_RESOURCES_SOCKET="+filepath.Join(h.work, "pod-resources", "kubelet.sock"),
		"SRIOV_CDI_DEVICE_INFO_DIR="+filepath.Join(h.work, "devinfo"),
		"SRIOV_CDI_HEALTH_ADDR=:8082",
		"SRIOV_CDI_RESCAN_INTERVAL="+tick.String(),
		"SRIOV_CDI_UEVENTS=true",
		"SRIOV_CDI_LOG_LEVEL=info",
		"SRIOV_CDI_LOG_FORMAT=json",
	)
}

func run(bin, work string, vfs int, noLive bool, ticks int, allocBudget time.Duration) (string, error) {
	h, err := setupHost(work, vfs, noLive)
	if err != nil {
		return "", err
	}
	hostDir, b, netdevs := h.hostDir, h.b, h.netdevs
	cfg := filepath.Join(work, "cfg", "config.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return "", err
	}
	dp := filepath.Join(work, "dp")
	k, err := startKubelet(dp)
	if err != nil {
		return "", err
	}
	defer k.gs.Stop()

	r := result{vfs: vfs, netdevs: len(netdevs), bin: filepath.Base(bin)}
	cmd, start, stop, err := startPlugin(bin, work, h.daemonSetEnv(cfg))
	if err != nil {
		return "", err
	}
	defer stop()
	want := map[string]int{vfioPool: vfioVFs, kernPool: vfs - vfioVFs}
	streams, err := k.waitLists(want, start.Add(startTimeout))
	if err != nil {
		if errors.Is(err, errTimeout) {
			r.startTimedOut = true
			r.hwmKiB = vmHWM(cmd.Process.Pid)
			r.pssAnon, r.pssFile = pss(cmd.Process.Pid)
			return r.row(noLive), nil
		}
		return "", err
	}
	r.startToLists = time.Since(start)

	ids := func(res string) []string { return streams[res].firstIDs }
	r.allocKernel, r.allocKernelErr = allocate(streams[kernPool].client, ids(kernPool), allocBudget)
	r.allocVFIO, r.allocVFIOErr = allocate(streams[vfioPool].client, ids(vfioPool), allocBudget)
	if !noLive {
		ks := streams[kernPool]
		// A VF of PF 1 loses and regains its driver, announced by a kernel
		// uevent (sent into this network namespace, as the kernel would).
		vf := fmt.Sprintf("0000:02:%02x.%d", 1/8, 1%8)
		r.uevent = changeToUpdate(ks, 10, func(i int) error {
			driver, action := "", "unbind"
			if i%2 == 1 {
				driver, action = "iavf", "bind"
			}
			if err := sysfstest.SetDriver(hostDir, vf, driver); err != nil {
				return err
			}
			return sendUevent(action, b.Sys(), vf)
		})
		// PF 1's link goes down and up: rtnetlink only, no kobject uevent.
		// The tree's operstate file is changed too, as the kernel would.
		r.link = changeToUpdate(ks, 10, func(i int) error {
			state := "down"
			if i%2 == 1 {
				state = "up"
			}
			if err := setOperState(hostDir, "0000:02:00.0", "ens1f0", state); err != nil {
				return err
			}
			return ipBatch("link set ens1f0 " + state + "\n")
		})
	}

	// A quiet host: nothing changes for a few rescan periods.
	time.Sleep(tick + time.Second)
	cdiBefore := mtimes(filepath.Join(work, "cdi"))
	cpu0 := cpuTime(cmd.Process.Pid)
	time.Sleep(time.Duration(ticks) * tick)
	r.tickCPU = (cpuTime(cmd.Process.Pid) - cpu0) / time.Duration(ticks)
	cdiAfter := mtimes(filepath.Join(work, "cdi"))
	for name, t := range cdiAfter {
		if !cdiBefore[name].Equal(t) {
			r.specWrites++
		}
	}
	r.hwmKiB = vmHWM(cmd.Process.Pid)
	r.pssAnon, r.pssFile = pss(cmd.Process.Pid)
	return r.row(noLive), nil
}

func (r result) row(noLive bool) string {
	mode := "/sys (live)"
	if noLive {
		mode = "tree (no live checks)"
	}
	if r.startTimedOut {
		return fmt.Sprintf("| %s | %d | %d | %s | > %v | — | — | — | — | — | %s |", r.bin, r.vfs, r.netdevs, mode, startTimeout, r.mem())
	}
	return fmt.Sprintf("| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s (%d spec writes) | %s |",
		r.bin, r.vfs, r.netdevs, mode, ms(r.startToLists), pct(r.allocKernel)+failed(r.allocKernelErr), pct(r.allocVFIO)+failed(r.allocVFIOErr), pct(r.uevent), pct(r.link),
		ms(r.tickCPU), r.specWrites, r.mem())
}

// mem is "peak RSS (Pss_Anon / Pss_File)" in MiB.
func (r result) mem() string {
	return fmt.Sprintf("%.1f (%.1f / %.1f)", float64(r.hwmKiB)/1024, float64(r.pssAnon)/1024, float64(r.pssFile)/1024)
}

const header = "| binary | VFs | netdevs | sysfs | start → all lists | Allocate kernel p50 / p99 (n) | Allocate vfio p50 / p99 (n) | uevent → list p50 / p99 (n) | link down/up → list p50 / p99 (n) | quiet 5 s tick CPU | peak RSS MiB (Pss_Anon / Pss_File) |\n|---|---|---|---|---|---|---|---|---|---|---|"

func failed(err error) string {
	if err == nil {
		return ""
	}
	fmt.Fprintf(os.Stderr, "hostbench: %v\n", err)
	if status.Code(err) == codes.DeadlineExceeded {
		return "; then one over 60 s (deadline)"
	}
	return "; then one failed"
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
	}
}

func pct(lat []time.Duration) string {
	if len(lat) == 0 {
		return "—"
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	p := func(q int) time.Duration { return s[min(len(s)-1, (len(s)*q+99)/100-1)] }
	return fmt.Sprintf("%s / %s (%d)", ms(p(50)), ms(p(99)), len(s))
}

// buildTree is sysfstest.SRIOVNICHost's layout (X710-class PFs behind ACS
// root ports, one IOMMU group per VF) with VFs 0-63 of PF 0 bound to
// vfio-pci (no netdev, /dev/vfio/<group> present). It returns the netdev
// names.
func buildTree(dir string, pfs int) (*sysfstest.Builder, []string) {
	b := sysfstest.New(dir)
	var netdevs []string
	group := 0
	next := func() string { group++; return strconv.Itoa(group) }
	b.Add(sysfstest.Function{Addr: "0000:00:00.0", Vendor: "8086", Device: "29c0", Class: "060000", NUMA: -1, Group: next()})
	for i := range pfs {
		// Root ports 00:01.0-00:01.7, 00:02.0-...: a device number is at most 1f.
		port := fmt.Sprintf("0000:00:%02x.%d", i/8+1, i%8)
		b.Add(sysfstest.Function{Addr: port, Vendor: "1b36", Device: "000c", Class: "060400", Driver: "pcieport", NUMA: i % 2, Group: next()})
		bus := i + 1
		pfNet := fmt.Sprintf("ens%df0", i)
		netdevs = append(netdevs, pfNet)
		pf := sysfstest.Function{
			Addr: fmt.Sprintf("0000:%02x:00.0", bus), Vendor: "8086", Device: "1572", Driver: "i40e",
			NUMA: i % 2, Group: next(), Parent: port, TotalVFs: vfsPerPF, Autoprobe: true,
			Netdevs: []sysfstest.Netdev{{Name: pfNet, OperState: "up", Carrier: true}},
		}
		vfs := make([]sysfstest.Function, vfsPerPF)
		for n := range vfsPerPF {
			fn := n + 1
			vf := sysfstest.Function{
				Addr: fmt.Sprintf("0000:%02x:%02x.%d", bus, fn/8, fn%8), Vendor: "8086", Device: "154c", Driver: "iavf",
				NUMA: i % 2, Group: next(),
			}
			if i == 0 && n < vfioVFs {
				vf.Driver, vf.DriverOverride = "vfio-pci", "vfio-pci"
			} else {
				name := fmt.Sprintf("ens%df0v%d", i, n)
				vf.Netdevs = []sysfstest.Netdev{{Name: name, OperState: "up", Carrier: true}}
				netdevs = append(netdevs, name)
			}
			vfs[n] = vf
		}
		b.AddPF(pf, vfs...)
	}
	return b, netdevs
}

// mountHost puts the tree over /sys and a tmpfs /dev (the real null, zero,
// random and urandom bound in, the tree's vfio/ copied) in this private
// mount namespace.
func mountHost(work, sys, dev string) error {
	if err := unix.Mount(sys, "/sys", "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %q over /sys: %w", sys, err)
	}
	realDev := filepath.Join(work, "realdev")
	if err := os.MkdirAll(realDev, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("/dev", realDev, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("keep /dev: %w", err)
	}
	if err := unix.Mount("tmpfs", "/dev", "tmpfs", 0, "mode=755"); err != nil {
		return fmt.Errorf("tmpfs on /dev: %w", err)
	}
	for _, n := range []string{"null", "zero", "random", "urandom"} {
		p := filepath.Join("/dev", n)
		if err := os.WriteFile(p, nil, 0o666); err != nil {
			return err
		}
		if err := unix.Mount(filepath.Join(realDev, n), p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", n, err)
		}
	}
	if err := os.MkdirAll("/dev/vfio", 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(filepath.Join(dev, "vfio"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Type().IsRegular() {
			if err := os.WriteFile(filepath.Join("/dev/vfio", e.Name()), nil, 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}

// makeLinks creates one link per netdev (dummy, or ifb on kernels without
// the dummy driver), brings lo up and gives the first PF an address and the
// default route (the host's own uplink).
func makeLinks(names []string) error {
	kind := "dummy"
	if ipBatch("link add probe0 type dummy\nlink del probe0\n") != nil {
		kind = "ifb"
	}
	var sb strings.Builder
	sb.WriteString("link set lo up\n")
	for _, n := range names {
		fmt.Fprintf(&sb, "link add %s type %s\n", n, kind)
	}
	fmt.Fprintf(&sb, "link set %s up\naddr add 192.0.2.1/24 dev %s\nroute add default via 192.0.2.254 dev %s\n", names[0], names[0], names[0])
	fmt.Fprintf(&sb, "link set %s up\n", "ens1f0")
	return ipBatch(sb.String())
}

func ipBatch(script string) error {
	cmd := exec.Command("ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -batch: %w: %s", err, out)
	}
	return nil
}

// sendUevent broadcasts a kernel-format uevent for a PCI function in this
// network namespace (needs CAP_NET_ADMIN in it).
func sendUevent(action, sys, addr string) error {
	canon, err := filepath.EvalSymlinks(filepath.Join(sys, "bus", "pci", "devices", addr))
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(sys, canon)
	if err != nil {
		return err
	}
	devpath := "/" + rel
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	msg := strings.Join([]string{action + "@" + devpath, "ACTION=" + action, "DEVPATH=" + devpath, "SUBSYSTEM=pci", "DRIVER=iavf", "PCI_SLOT_NAME=" + addr, "SEQNUM=1"}, "\x00") + "\x00"
	return unix.Sendto(fd, []byte(msg), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1})
}

func setOperState(hostDir, addr, netdev, state string) error {
	canon, err := filepath.EvalSymlinks(filepath.Join(hostDir, "sys", "bus", "pci", "devices", addr))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(canon, "net", netdev, "operstate"), []byte(state+"\n"), 0o444)
}

// changeToUpdate makes n changes and times each to the next list on s; a
// change with no update within two rescan periods counts as that long.
func changeToUpdate(s *stream, n int, change func(i int) error) []time.Duration {
	var lat []time.Duration
	for i := range n {
		s.drain()
		start := time.Now()
		if err := change(i); err != nil {
			fmt.Fprintf(os.Stderr, "hostbench: change: %v\n", err)
			return nil
		}
		select {
		case <-s.updates:
			lat = append(lat, time.Since(start))
		case <-time.After(2 * tick):
			lat = append(lat, 2*tick)
		}
		time.Sleep(100 * time.Millisecond) // settle (debounce) before the next change
	}
	return lat
}

func allocate(c pluginapi.DevicePluginClient, ids []string, budget time.Duration) ([]time.Duration, error) {
	var lat []time.Duration
	deadline := time.Now().Add(budget)
	for i := 0; i < 50 && (i < 3 || time.Now().Before(deadline)); i++ {
		id := ids[i%len(ids)]
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		start := time.Now()
		_, err := c.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{id}}}})
		cancel()
		if err != nil {
			return lat, fmt.Errorf("allocate %s: %w", id, err)
		}
		lat = append(lat, time.Since(start))
	}
	return lat, nil
}

func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)        // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64)        // field 15
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// settle waits until the machine is quiet: all CPUs together less than
// 10 % busy over half a second, or max has passed. It returns how long
// it waited and the busy share of the last half second.
func settle(max time.Duration) (time.Duration, float64) {
	t0 := time.Now()
	busy := 1.0
	for time.Since(t0) < max {
		b0, a0 := cpuJiffies()
		time.Sleep(500 * time.Millisecond)
		b1, a1 := cpuJiffies()
		if a1 <= a0 {
			break // no /proc/stat: do not wait
		}
		if busy = float64(b1-b0) / float64(a1-a0); busy < 0.10 {
			break
		}
	}
	return time.Since(t0), busy
}

// cpuJiffies is /proc/stat's busy and all time, summed over all CPUs.
func cpuJiffies() (busy, all int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	for i := 1; i < len(f); i++ {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		all += v
		if i != 4 && i != 5 {
			busy += v
		}
	}
	return busy, all
}

// vmHWM is the peak RSS of pid in KiB (0 when unreadable).
func vmHWM(pid int) int {
	kb, _ := procmem.HWM(pid)
	return kb
}

// pss returns Pss_Anon and Pss_File of pid in KiB (0 when unreadable):
// anonymous memory against binary pages touched.
func pss(pid int) (anon, file int) {
	anon, file, _ = procmem.PSS(pid)
	return anon, file
}

func mtimes(dir string) map[string]time.Time {
	out := map[string]time.Time{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			out[e.Name()] = fi.ModTime()
		}
	}
	return out
}

// kubelet is the Registration service and kubelet's side of each plugin.
type kubelet struct {
	pluginapi.UnimplementedRegistrationServer
	dir string
	gs  *grpc.Server
	ch  chan *pluginapi.RegisterRequest
}

var errTimeout = errors.New("timed out")

var startTimeout time.Duration

func startKubelet(dir string) (*kubelet, error) {
	lis, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		return nil, err
	}
	k := &kubelet{dir: dir, gs: grpc.NewServer(), ch: make(chan *pluginapi.RegisterRequest, 16)}
	pluginapi.RegisterRegistrationServer(k.gs, k)
	go k.gs.Serve(lis)
	return k, nil
}

func (k *kubelet) Register(ctx context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	c, err := dial(filepath.Join(k.dir, r.Endpoint))
	if err != nil {
		return nil, err
	}
	if _, err := c.GetDevicePluginOptions(ctx, &pluginapi.Empty{}); err != nil {
		return nil, err
	}
	k.ch <- r
	return &pluginapi.Empty{}, nil
}

func dial(sock string) (pluginapi.DevicePluginClient, error) {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return pluginapi.NewDevicePluginClient(conn), nil
}

type stream struct {
	client   pluginapi.DevicePluginClient
	firstIDs []string
	updates  chan struct{}
}

func (s *stream) drain() {
	for {
		select {
		case <-s.updates:
		default:
			return
		}
	}
}

// waitLists registers every pool in want, runs ListAndWatch on each and
// returns once each has listed the wanted number of devices.
func (k *kubelet) waitLists(want map[string]int, deadline time.Time) (map[string]*stream, error) {
	out := map[string]*stream{}
	var mu sync.Mutex
	full := make(chan string, 16)
	for len(out) < len(want) {
		var r *pluginapi.RegisterRequest
		select {
		case r = <-k.ch:
		case <-time.After(time.Until(deadline)):
			return nil, errTimeout
		}
		c, err := dial(filepath.Join(k.dir, r.Endpoint))
		if err != nil {
			return nil, err
		}
		lw, err := c.ListAndWatch(context.Background(), &pluginapi.Empty{})
		if err != nil {
			return nil, err
		}
		s := &stream{client: c, updates: make(chan struct{}, 64)}
		out[r.ResourceName] = s
		res := r.ResourceName
		go func() {
			announced := false
			for {
				resp, err := lw.Recv()
				if err != nil {
					return
				}
				mu.Lock()
				if s.firstIDs == nil || !announced {
					s.firstIDs = s.firstIDs[:0]
					for _, d := range resp.Devices {
						s.firstIDs = append(s.firstIDs, d.ID)
					}
				}
				n := len(resp.Devices)
				mu.Unlock()
				if !announced && n >= want[res] {
					announced = true
					full <- res
					continue
				}
				if announced {
					select {
					case s.updates <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	for range want {
		select {
		case <-full:
		case <-time.After(time.Until(deadline)):
			return nil, errTimeout
		}
	}
	return out, nil
}
