package main

// NVMe Virtualization Management (NVMe 1.4+ admin opcode 0x1c) through the
// nvme driver's NVME_IOCTL_ADMIN_CMD passthrough on /dev/nvmeX.
//
// QEMU's SR-IOV NVMe controller starts every secondary (VF) controller
// offline with no queues or interrupts, so the nvme driver fails to probe the
// VFs and leaves them driverless. To get VFs owned by a real host driver (the
// normal state of NIC VFs, and what a vfio pool must unbind from and restore),
// the PF's flexible resources are moved to the secondary controllers and
// those are set online — the sequence of QEMU's docs/system/devices/nvme.rst:
//
//  1. primary flexible allocation of VQ and VI resources := 0 (ACT=1)
//  2. function-level reset of the PF, so the release takes effect
//  3. enable the VFs (sriov_numvfs)
//  4. per VF: assign VI (1) and VQ (2) resources (ACT=8), set online (ACT=9)
//  5. let the nvme driver probe the VFs

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// nvmePassthruCmd is struct nvme_passthru_cmd (linux/nvme_ioctl.h), 72 bytes.
type nvmePassthruCmd struct {
	Opcode      uint8
	Flags       uint8
	Rsvd1       uint16
	NSID        uint32
	CDW2        uint32
	CDW3        uint32
	Metadata    uint64
	Addr        uint64
	MetadataLen uint32
	DataLen     uint32
	CDW10       uint32
	CDW11       uint32
	CDW12       uint32
	CDW13       uint32
	CDW14       uint32
	CDW15       uint32
	TimeoutMs   uint32
	Result      uint32
}

// NVME_IOCTL_ADMIN_CMD = _IOWR('N', 0x41, struct nvme_admin_cmd).
const nvmeIoctlAdminCmd = 3<<30 | uint32(unsafe.Sizeof(nvmePassthruCmd{}))<<16 | 'N'<<8 | 0x41

const (
	opIdentify   = 0x06
	opVirtMgmt   = 0x1c
	cnsSecCtrls  = 0x15 // Identify: secondary controller list
	rtVQ         = 0    // resource type: virtual queue
	rtVI         = 1    // resource type: virtual interrupt
	actPriFlex   = 1    // primary flexible allocation
	actSecOnline = 9
	actSecAssign = 8
)

type nvmeStatusError struct {
	op     string
	status uintptr
}

func (e *nvmeStatusError) Error() string {
	return fmt.Sprintf("%s: NVMe status 0x%x (SCT %d SC 0x%02x)", e.op, e.status, (e.status>>8)&7, e.status&0xff)
}

func nvmeAdmin(ctrl string, op string, cmd *nvmePassthruCmd, data []byte) error {
	f, err := os.OpenFile(filepath.Join("/dev", ctrl), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer f.Close()
	if len(data) > 0 {
		cmd.Addr = uint64(uintptr(unsafe.Pointer(&data[0])))
		cmd.DataLen = uint32(len(data))
	}
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(nvmeIoctlAdminCmd), uintptr(unsafe.Pointer(cmd)))
	runtime.KeepAlive(data)
	runtime.KeepAlive(cmd)
	if errno != 0 {
		return fmt.Errorf("%s: ioctl NVME_IOCTL_ADMIN_CMD on /dev/%s: %w", op, ctrl, errno)
	}
	if r != 0 {
		return &nvmeStatusError{op: op, status: r}
	}
	return nil
}

// secCtrl is one Secondary Controller Entry (NVMe base spec, Identify CNS 15h).
type secCtrl struct {
	SCID   uint16 // secondary controller identifier
	PCID   uint16 // primary controller identifier
	Online bool
	VFN    uint16 // virtual function number (1-based)
	NVQ    uint16 // VQ resources assigned
	NVI    uint16 // VI resources assigned
}

func secondaryControllers(ctrl string) ([]secCtrl, error) {
	buf := make([]byte, 4096)
	cmd := &nvmePassthruCmd{Opcode: opIdentify, CDW10: cnsSecCtrls}
	if err := nvmeAdmin(ctrl, "identify secondary controller list", cmd, buf); err != nil {
		return nil, err
	}
	n := int(buf[0])
	out := make([]secCtrl, 0, n)
	for i := 0; i < n && 32+32*(i+1) <= len(buf); i++ {
		e := buf[32+32*i:]
		out = append(out, secCtrl{
			SCID:   binary.LittleEndian.Uint16(e[0:]),
			PCID:   binary.LittleEndian.Uint16(e[2:]),
			Online: e[4]&1 == 1,
			VFN:    binary.LittleEndian.Uint16(e[8:]),
			NVQ:    binary.LittleEndian.Uint16(e[10:]),
			NVI:    binary.LittleEndian.Uint16(e[12:]),
		})
	}
	return out, nil
}

func virtMgmt(ctrl string, cntlid uint16, rt, act uint32, nr uint16) error {
	cmd := &nvmePassthruCmd{
		Opcode: opVirtMgmt,
		CDW10:  uint32(cntlid)<<16 | rt<<8 | act,
		CDW11:  uint32(nr),
	}
	return nvmeAdmin(ctrl, fmt.Sprintf("virtualization management cntlid=%d rt=%d act=%d nr=%d", cntlid, rt, act, nr), cmd, nil)
}

func waitCtrlLive(ctrl string, timeout time.Duration) error {
	p := filepath.Join("/sys/class/nvme", ctrl, "state")
	if !waitFor(timeout, func() bool { s, _ := readAttr(p); return s == "live" }) {
		s, _ := readAttr(p)
		return fmt.Errorf("controller %s not live after %s (state %q)", ctrl, timeout, s)
	}
	return nil
}

// bringVFsOnline enables n VFs on the PF (bound to nvme, controller ctrl)
// and makes the nvme driver own each of them. It returns the VF addresses.
func bringVFsOnline(t *T, pf, ctrl string, n int) ([]string, error) {
	if _, err := setNumVFs(pf, 0); err != nil {
		return nil, err
	}
	cntlid, err := readAttr(filepath.Join("/sys/class/nvme", ctrl, "cntlid"))
	if err != nil {
		return nil, err
	}
	var pcid uint16
	if _, err := fmt.Sscan(cntlid, &pcid); err != nil {
		return nil, fmt.Errorf("parse cntlid %q: %w", cntlid, err)
	}
	for _, rt := range []uint32{rtVI, rtVQ} {
		if err := virtMgmt(ctrl, pcid, rt, actPriFlex, 0); err != nil {
			return nil, err
		}
	}
	// Function-level reset: the PF gives up its flexible resources. The
	// nvme driver re-initialises the controller around the reset.
	if err := writeAttr(filepath.Join(devPath(pf), "reset"), "1"); err != nil {
		return nil, fmt.Errorf("reset PF %s: %w", pf, err)
	}
	if err := waitCtrlLive(ctrl, 20*time.Second); err != nil {
		return nil, err
	}
	// Keep the driver off the VFs until their controllers are online, else
	// nvme probes them, fails, and leaves them driverless.
	if err := setAutoprobe(pf, false); err != nil {
		return nil, err
	}
	if _, err := setNumVFs(pf, n); err != nil {
		return nil, err
	}
	vfs := vfsOf(pf)
	if len(vfs) != n {
		return nil, fmt.Errorf("PF %s has %d virtfn links, want %d", pf, len(vfs), n)
	}
	secs, err := secondaryControllers(ctrl)
	if err != nil {
		return nil, err
	}
	t.Logf("secondary controllers of %s: %+v", ctrl, secs)
	byVFN := map[uint16]secCtrl{}
	for _, s := range secs {
		byVFN[s.VFN] = s
	}
	for i := range vfs {
		s, ok := byVFN[uint16(i+1)]
		if !ok {
			return nil, fmt.Errorf("no secondary controller for VF number %d", i+1)
		}
		if err := virtMgmt(ctrl, s.SCID, rtVI, actSecAssign, 1); err != nil {
			return nil, err
		}
		if err := virtMgmt(ctrl, s.SCID, rtVQ, actSecAssign, 2); err != nil {
			return nil, err
		}
		if err := virtMgmt(ctrl, s.SCID, 0, actSecOnline, 0); err != nil {
			return nil, err
		}
	}
	if err := setAutoprobe(pf, true); err != nil {
		return nil, err
	}
	for _, vf := range vfs {
		if err := writeAttr("/sys/bus/pci/drivers_probe", vf); err != nil {
			return nil, fmt.Errorf("probe VF %s: %w", vf, err)
		}
	}
	for _, vf := range vfs {
		if !waitFor(20*time.Second, func() bool { return driverOf(vf) == "nvme" && nvmeCtrlOf(vf) != "" }) {
			return nil, fmt.Errorf("VF %s not bound to nvme (driver %q)", vf, driverOf(vf))
		}
		if c := nvmeCtrlOf(vf); c != "" {
			if err := waitCtrlLive(c, 20*time.Second); err != nil {
				return nil, fmt.Errorf("VF %s: %w", vf, err)
			}
		}
	}
	secs, err = secondaryControllers(ctrl)
	if err != nil {
		return nil, err
	}
	for _, s := range secs {
		if int(s.VFN) <= n && !s.Online {
			return nil, fmt.Errorf("secondary controller %d (VF %d) is offline after probe", s.SCID, s.VFN)
		}
	}
	return vfs, nil
}
