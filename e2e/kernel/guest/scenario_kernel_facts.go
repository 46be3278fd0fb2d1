package main

// kernel-binding-facts: no product involved. It binds VFs by hand the way
// the product must, and records what the kernel does at each step, so the
// product's assumptions are checked against a real kernel on every run:
// synchronous driver and /dev/vfio/<group> appearance, VFIO viability on an
// ACS and a non-ACS group, what unbind does while a VFIO device fd is open,
// driver_override semantics, nvme VF unbind/reprobe.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VFIO ioctls (linux/vfio.h): _IO(';', 100 + n).
const (
	vfioSetIOMMU          = 0x3b00 | (100 + 2)
	vfioGroupGetStatus    = 0x3b00 | (100 + 3)
	vfioGroupSetContainer = 0x3b00 | (100 + 4)
	vfioGroupGetDeviceFD  = 0x3b00 | (100 + 6)
	vfioType1IOMMU        = 1
	vfioGroupFlagsViable  = 1
)

type vfioGroupStatus struct {
	Argsz uint32
	Flags uint32
}

func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

func ioctlInt(fd int, req uintptr, arg uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// vfioOpen is an open container + group (+ device fd if asked for).
type vfioOpen struct {
	container, group, device int
	viable                   bool
}

func (v *vfioOpen) close() {
	for _, fd := range []int{v.device, v.group, v.container} {
		if fd > 0 {
			unix.Close(fd)
		}
	}
}

// openVFIO does what a VMM does with a group: status, set container, set
// the type1 IOMMU, get the device fd. It stops at the first error.
func openVFIO(group, addr string) (*vfioOpen, error) {
	v := &vfioOpen{container: -1, group: -1, device: -1}
	var err error
	if v.container, err = unix.Open("/dev/vfio/vfio", unix.O_RDWR, 0); err != nil {
		return v, fmt.Errorf("open /dev/vfio/vfio: %w", err)
	}
	if v.group, err = unix.Open("/dev/vfio/"+group, unix.O_RDWR, 0); err != nil {
		return v, fmt.Errorf("open /dev/vfio/%s: %w", group, err)
	}
	st := vfioGroupStatus{Argsz: uint32(unsafe.Sizeof(vfioGroupStatus{}))}
	if _, err := ioctlPtr(v.group, vfioGroupGetStatus, unsafe.Pointer(&st)); err != nil {
		return v, fmt.Errorf("VFIO_GROUP_GET_STATUS: %w", err)
	}
	v.viable = st.Flags&vfioGroupFlagsViable != 0
	c := int32(v.container)
	if _, err := ioctlPtr(v.group, vfioGroupSetContainer, unsafe.Pointer(&c)); err != nil {
		return v, fmt.Errorf("VFIO_GROUP_SET_CONTAINER: %w", err)
	}
	if _, err := ioctlInt(v.container, vfioSetIOMMU, vfioType1IOMMU); err != nil {
		return v, fmt.Errorf("VFIO_SET_IOMMU(TYPE1): %w", err)
	}
	name, _ := unix.BytePtrFromString(addr)
	if v.device, err = ioctlPtr(v.group, vfioGroupGetDeviceFD, unsafe.Pointer(name)); err != nil {
		return v, fmt.Errorf("VFIO_GROUP_GET_DEVICE_FD: %w", err)
	}
	return v, nil
}

// bindVfioByHand is the binding sequence the product is expected to use.
// It returns what was true the instant the last write returned.
func bindVfioByHand(addr string) (driverNow string, nodeNow bool, d time.Duration, err error) {
	start := time.Now()
	if err := writeAttr(devPath(addr)+"/driver_override", "vfio-pci"); err != nil {
		return "", false, 0, err
	}
	if driverOf(addr) != "" {
		if err := writeAttr(devPath(addr)+"/driver/unbind", addr); err != nil {
			return "", false, 0, err
		}
	}
	if err := writeAttr("/sys/bus/pci/drivers_probe", addr); err != nil {
		return "", false, 0, err
	}
	d = time.Since(start)
	return driverOf(addr), isCharDev("/dev/vfio/" + groupOf(addr)), d, nil
}

func (h *harness) kernelBindingFacts(t *T) error {
	l := h.lab
	var bad []string
	fact := func(format string, args ...any) { t.Logf("FACT "+format, args...) }

	// 1. Driverless VF behind an ACS port -> vfio-pci.
	vfs := vfsOf(l.pfVfio)
	a := vfs[len(vfs)-1]
	before := snapshot(allPCI())
	t.Cleanup(func() { putBack(t, before) })
	g := groupOf(a)

	err := writeAttr("/sys/bus/pci/drivers_probe", a)
	fact("drivers_probe of a driverless VF with sriov_drivers_autoprobe=0 and no override: err=%v driver=%q", err, driverOf(a))
	err = writeAttr("/sys/bus/pci/drivers/vfio-pci/bind", a)
	fact("writing the VF to drivers/vfio-pci/bind without driver_override: err=%v driver=%q", err, driverOf(a))

	drv, node, d, err := bindVfioByHand(a)
	if err != nil {
		return fmt.Errorf("bind %s to vfio-pci by hand: %w", a, err)
	}
	fact("override+drivers_probe took %s; when the write returned: driver=%q /dev/vfio/%s char device=%v", fmtDur(d), drv, g, node)
	if drv != "vfio-pci" || !node {
		bad = append(bad, fmt.Sprintf("%s: driver %q node %v right after drivers_probe", a, drv, node))
	}
	t.Detail("bind=%s", fmtDur(d))

	// 2. A VMM's use of the group, then unbind while the device fd is open.
	v, err := openVFIO(g, a)
	fact("VFIO on ACS group %s: viable=%v err=%v", g, v.viable, err)
	if err != nil || !v.viable {
		v.close()
		bad = append(bad, fmt.Sprintf("VFIO open of viable group %s: viable=%v err=%v", g, v.viable, err))
	} else {
		done := make(chan error, 1)
		ustart := time.Now()
		go func() { done <- writeAttr("/sys/bus/pci/drivers/vfio-pci/unbind", a) }()
		select {
		case err := <-done:
			fact("unbind from vfio-pci with the device fd open returned at once (%s): %v", fmtDur(time.Since(ustart)), err)
			v.close()
		case <-time.After(time.Second):
			fact("unbind from vfio-pci BLOCKS while a VFIO device fd is open (still blocked after 1s); closing the fd")
			v.close()
			closed := time.Now()
			select {
			case err := <-done:
				fact("unbind returned %s after the fd was closed: %v", fmtDur(time.Since(closed)), err)
				t.Detail("unbind_blocks_while_fd_open=true")
			case <-time.After(10 * time.Second):
				bad = append(bad, "unbind still blocked 10s after the VFIO device fd was closed")
			}
		}
	}
	fact("after unbind: driver=%q /dev/vfio/%s exists=%v override=%q", driverOf(a), g, exists("/dev/vfio/"+g), attr(a, "driver_override"))

	// 3. driver_override semantics.
	err = writeAttr(devPath(a)+"/driver_override", "")
	ov := attr(a, "driver_override")
	fact("writing an empty string (0 bytes) to driver_override: err=%v, reads %q (a zero-length write is a no-op: clear it with \"\\n\")", err, ov)
	err = writeAttr(devPath(a)+"/driver_override", "\n")
	fact("writing \"\\n\" to driver_override: err=%v, reads %q", err, attr(a, "driver_override"))

	// 4. Non-viable group: the e2e-shared PF's VF.
	sv := vfsOf(l.pfShared)[0]
	sg := groupOf(sv)
	drv, node, _, err = bindVfioByHand(sv)
	fact("shared group %s (members %v): binding %s to vfio-pci by hand: err=%v driver=%q node=%v", sg, groupMembers(sg), sv, err, drv, node)
	if err == nil && node {
		v, err := openVFIO(sg, sv)
		v.close()
		fact("VFIO on non-viable group %s: viable=%v err=%v", sg, v.viable, err)
		if v.viable || !errors.Is(err, unix.EPERM) {
			bad = append(bad, fmt.Sprintf("group %s: viable=%v err=%v, want not viable and EPERM from SET_CONTAINER", sg, v.viable, err))
		}
	}
	putBack(t, before)

	// 5. An nvme-owned VF: override alone does nothing, unbind removes the
	// controller, the re-probe of nvme is asynchronous.
	if len(l.nvmeOnline) > 0 {
		n := l.nvmeOnline[len(l.nvmeOnline)-1]
		ctrl := nvmeCtrlOf(n)
		_ = writeAttr(devPath(n)+"/driver_override", "vfio-pci")
		fact("nvme VF %s: driver_override=vfio-pci alone leaves driver=%q", n, driverOf(n))
		_ = writeAttr(devPath(n)+"/driver/unbind", n)
		fact("after unbind from nvme: driver=%q /sys/class/nvme/%s exists=%v", driverOf(n), ctrl, exists(filepath.Join("/sys/class/nvme", ctrl)))
		_ = writeAttr("/sys/bus/pci/drivers_probe", n)
		fact("after drivers_probe: driver=%q group node=%v", driverOf(n), isCharDev("/dev/vfio/"+groupOf(n)))
		_ = writeAttr(devPath(n)+"/driver_override", "\n")
		_ = writeAttr(devPath(n)+"/driver/unbind", n)
		pstart := time.Now()
		_ = writeAttr("/sys/bus/pci/drivers_probe", n)
		c := nvmeCtrlOf(n)
		st, _ := readAttr(filepath.Join("/sys/class/nvme", c, "state"))
		fact("back to nvme: when drivers_probe returned (%s): driver=%q controller=%q state=%q", fmtDur(time.Since(pstart)), driverOf(n), c, st)
		if !waitFor(10*time.Second, func() bool { return len(ctrlsLive([]string{n})) == 0 }) {
			bad = append(bad, fmt.Sprintf("%s: nvme controller not live 10s after re-probe", n))
		}
		c = nvmeCtrlOf(n)
		fact("nvme controller %s live %s after drivers_probe (was %s before)", c, fmtDur(time.Since(pstart)), ctrl)
	}
	// 6. What a rescan sees while sriov_numvfs is being lowered.
	pf := l.pfVfio
	n := numVFs(pf)
	wdone := make(chan time.Time, 1)
	wstart := time.Now()
	go func() {
		_ = writeAttr(devPath(pf)+"/sriov_numvfs", "0")
		wdone <- time.Now()
	}()
	time.Sleep(50 * time.Millisecond)
	rstart := time.Now()
	v0 := attr(pf, "sriov_numvfs")
	rend := time.Now()
	wend := <-wdone
	fact("reading %s/sriov_numvfs 50ms into a write of 0 (which took %s) returned %q after %s (%s after the write returned): the PF's device lock is held for the whole write",
		pf, fmtDur(wend.Sub(wstart)), v0, fmtDur(rend.Sub(rstart)), fmtDur(max(rend.Sub(wend), 0)))
	if _, err := setNumVFs(pf, n); err != nil {
		bad = append(bad, fmt.Sprintf("re-enable %d VFs on %s: %v", n, pf, err))
	}

	if diff := diffStates(before, snapshot(allPCI())); len(diff) > 0 {
		bad = append(bad, "state not restored: "+fmt.Sprint(diff))
	}
	_ = os.Stdout.Sync()
	return errorsJoin(bad)
}

// kernelLogClean runs last: no scenario may have made the kernel warn,
// oops or report a hung task.
func (h *harness) kernelLogClean(t *T) error {
	r := run(10*time.Second, nil, "dmesg")
	if r.err != nil {
		return fmt.Errorf("dmesg: %v", r.err)
	}
	var bad []string
	for _, line := range strings.Split(r.stdout, "\n") {
		for _, pat := range []string{"WARNING: CPU", "BUG:", "Call Trace:", "Oops", "general protection", "blocked for more than", "soft lockup", "DMAR: DRHD: handling fault", "DMAR: [DMA"} {
			if strings.Contains(line, pat) {
				bad = append(bad, strings.TrimSpace(line))
				break
			}
		}
	}
	if len(bad) > 0 {
		dmesgTail(t, 60)
		return fmt.Errorf("kernel log has %d alarming lines, first: %s", len(bad), bad[0])
	}
	t.Detail("lines=%d", strings.Count(r.stdout, "\n"))
	return nil
}
