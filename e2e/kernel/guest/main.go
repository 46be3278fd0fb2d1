// Command guest is the e2e-kernel test driver. It runs inside the QEMU guest
// as part of /init (see e2e/kernel/run.sh and init.sh), drives the sriov-cdi
// CLI and plugin against the real kernel, and prints one line per scenario:
//
//	E2E PASS <name> <details>
//	E2E FAIL <name> <reason>
//	E2E SKIP <name> <what is missing>
//
// followed by "E2E END ...". A scenario whose product feature does not exist
// yet is skipped, never passed.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	cli := flag.String("cli", "/e2e/sriov-cdi", "path of the sriov-cdi binary")
	work := flag.String("work", "/run/e2e", "scratch directory")
	flag.Parse()

	h := &harness{cli: *cli, work: *work, only: map[string]bool{}}
	if b, err := os.ReadFile("/e2e/cli-missing"); err == nil {
		h.cliMissing = strings.TrimSpace(string(b))
	} else if _, err := os.Stat(*cli); err != nil {
		h.cliMissing = fmt.Sprintf("%s: %v", *cli, err)
	}
	if b, err := os.ReadFile("/e2e/only"); err == nil {
		for _, n := range strings.Split(strings.TrimSpace(string(b)), ",") {
			h.only[strings.TrimSpace(n)] = true
		}
	}
	if err := os.MkdirAll(*work, 0o755); err != nil {
		emit("E2E FAIL lab-setup %v", err)
		return
	}
	if b, err := os.ReadFile("/e2e/machine"); err == nil && strings.TrimSpace(string(b)) == "nic" {
		n, err := newNicLab()
		if err != nil {
			emit("E2E FAIL lab-setup %s", oneLine(err.Error()))
			emit("E2E END passed=0 failed=1 skipped=0")
			return
		}
		h.nic = n
		h.runAll(nicScenarios(h))
		return
	}
	l, err := newLab()
	if err != nil {
		emit("E2E FAIL lab-setup %s", oneLine(err.Error()))
		emit("E2E END passed=0 failed=1 skipped=0")
		return
	}
	h.lab = l
	emit("  lab: vfio PF %s (%s), nvme PF %s (%s), shared-group PF %s (%s)",
		l.pfVfio, l.ctrlVfio, l.pfNvme, l.ctrlNvme, l.pfShared, l.ctrlShared)
	h.runAll(scenarios(h))
}
