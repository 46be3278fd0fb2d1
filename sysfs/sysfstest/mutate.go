package sysfstest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The functions below change a written tree the way the kernel would, so
// tests can watch code react to VF removal or a driver change.

// SetDriver rebinds addr to driver ("" unbinds), updating both links and,
// for vfio-pci, /dev/vfio/<group> and vfio-dev/. As on a real kernel, a
// function's netdevs exist only while a network driver owns it: unbinding
// removes net/ and its class/net links (kept aside under dir, outside the
// tree), and binding a driver other than vfio-pci or pci-stub brings them
// back.
func SetDriver(dir, addr, driver string) error {
	w := &writer{sys: filepath.Join(dir, "sys")}
	devPath, err := canonical(w.sys, addr)
	if err != nil {
		return err
	}
	abs := filepath.Join(w.sys, devPath)
	if _, err := os.Readlink(filepath.Join(abs, "driver")); err == nil {
		if err := stashNetdevs(dir, abs, addr); err != nil {
			return err
		}
	}
	if old, err := os.Readlink(filepath.Join(abs, "driver")); err == nil {
		_ = os.Remove(filepath.Join(abs, filepath.Dir(old), filepath.Base(old), addr))
		_ = os.Remove(filepath.Join(abs, "driver"))
		if filepath.Base(old) == "vfio-pci" {
			_ = os.RemoveAll(filepath.Join(abs, "vfio-dev"))
			if g, err := os.Readlink(filepath.Join(abs, "iommu_group")); err == nil {
				_ = os.Remove(filepath.Join(dir, "dev", "vfio", filepath.Base(g)))
			}
		}
	}
	ue, _ := os.ReadFile(filepath.Join(abs, "uevent"))
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(ue)), "\n") {
		if !strings.HasPrefix(l, "DRIVER=") && l != "" {
			lines = append(lines, l)
		}
	}
	if driver != "" {
		writeDriverLink(w, devPath, addr, driver)
		lines = append([]string{"DRIVER=" + driver}, lines...)
		if driver == "vfio-pci" {
			if g, err := os.Readlink(filepath.Join(abs, "iommu_group")); err == nil {
				w.file(filepath.Join("..", "dev", "vfio", filepath.Base(g)), "", 0o600)
			}
			w.mkdir(filepath.Join(devPath, "vfio-dev", "vfio0"))
		}
	}
	w.file(filepath.Join(devPath, "uevent"), strings.Join(lines, "\n"), 0o644)
	if w.err == nil && driver != "" && createsNetdevs(driver) {
		return unstashNetdevs(dir, abs, addr)
	}
	return w.err
}

// createsNetdevs: vfio-pci and pci-stub own functions without netdevs;
// any other driver of a function that had netdevs brings them back.
func createsNetdevs(driver string) bool { return driver != "vfio-pci" && driver != "pci-stub" }

// netStash is where a function's net/ waits while no network driver owns
// it: outside the tree, so no scan can see it.
func netStash(dir, addr string) string { return filepath.Join(dir, "netdev-stash", addr) }

func stashNetdevs(dir, abs, addr string) error {
	net := filepath.Join(abs, "net")
	names, err := os.ReadDir(net)
	if err != nil {
		return nil // no netdevs
	}
	stash := netStash(dir, addr)
	if err := os.MkdirAll(filepath.Dir(stash), 0o755); err != nil {
		return err
	}
	_ = os.RemoveAll(stash)
	for _, n := range names {
		_ = os.Remove(filepath.Join(dir, "sys", "class", "net", n.Name()))
	}
	return os.Rename(net, stash)
}

func unstashNetdevs(dir, abs, addr string) error {
	stash := netStash(dir, addr)
	names, err := os.ReadDir(stash)
	if err != nil {
		return nil // nothing kept aside
	}
	net := filepath.Join(abs, "net")
	if err := os.Rename(stash, net); err != nil {
		return err
	}
	sys := filepath.Join(dir, "sys")
	w := &writer{sys: sys}
	rel, err := filepath.Rel(sys, net)
	if err != nil {
		return err
	}
	for _, n := range names {
		w.link(filepath.Join("class/net", n.Name()), filepath.Join(rel, n.Name()))
	}
	return w.err
}

// SetNumVFs shrinks a PF's VFs to n, removing the higher-indexed VFs from
// every place the kernel removes them.
func SetNumVFs(dir, pf string, n int) error {
	sys := filepath.Join(dir, "sys")
	pfPath, err := canonical(sys, pf)
	if err != nil {
		return err
	}
	abs := filepath.Join(sys, pfPath)
	cur, err := os.ReadFile(filepath.Join(abs, "sriov_numvfs"))
	if err != nil {
		return err
	}
	have, err := strconv.Atoi(strings.TrimSpace(string(cur)))
	if err != nil {
		return err
	}
	if n > have {
		return fmt.Errorf("SetNumVFs can only shrink (%s has %d VFs)", pf, have)
	}
	for i := n; i < have; i++ {
		link := filepath.Join(abs, "virtfn"+strconv.Itoa(i))
		t, err := os.Readlink(link)
		if err != nil {
			return err
		}
		vf := filepath.Base(t)
		_ = SetDriver(dir, vf, "")
		vfAbs := filepath.Join(abs, t)
		if g, err := os.Readlink(filepath.Join(vfAbs, "iommu_group")); err == nil {
			gdir := filepath.Join(vfAbs, g)
			_ = os.Remove(filepath.Join(gdir, "devices", vf))
			if rest, _ := os.ReadDir(filepath.Join(gdir, "devices")); len(rest) == 0 {
				_ = os.RemoveAll(gdir)
			}
		}
		_ = os.Remove(filepath.Join(sys, "bus/pci/devices", vf))
		if err := os.RemoveAll(vfAbs); err != nil {
			return err
		}
		if err := os.Remove(link); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(abs, "sriov_numvfs"), []byte(strconv.Itoa(n)+"\n"), 0o644)
}

func canonical(sys, addr string) (string, error) {
	t, err := os.Readlink(filepath.Join(sys, "bus/pci/devices", addr))
	if err != nil {
		return "", fmt.Errorf("no PCI function %s in the tree: %w", addr, err)
	}
	return filepath.Rel(sys, filepath.Join(sys, "bus/pci/devices", t))
}
