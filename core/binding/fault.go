package binding

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// FaultEnv is the environment variable of the fault hook, for crash tests
// and the e2e lab. Its value is a comma-separated list of rules:
//
//	exit-after-write:N   exit right after the Nth driver-attribute write of
//	                     this process returns (N >= 1, counted across all
//	                     functions and operations)
//	exit-after:STEP      exit right after the first write of STEP, one of
//	                     set-override, unbind, probe, bind, clear-override
//	after-STEP           the same as exit-after:STEP (e.g. after-unbind:
//	                     the function has left its driver, vfio-pci does not
//	                     have it yet)
//
// The process exits with status FaultExitCode, leaving the state file as
// it was at that moment, as a crash would. Unset or empty: no fault.
const FaultEnv = "SRIOV_CDI_FAULT"

// FaultExitCode is the exit status of a process stopped by the fault hook.
const FaultExitCode = 3

type faultHook struct {
	spec       string
	afterWrite int
	afterStep  sysfs.Step
	exit       func(int)
	stderr     io.Writer

	mu     sync.Mutex
	writes int
}

var faultSteps = []sysfs.Step{sysfs.StepSetOverride, sysfs.StepUnbind, sysfs.StepProbe, sysfs.StepBind, sysfs.StepClearOverride}

func parseFault(spec string) (*faultHook, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, nil
	}
	h := &faultHook{spec: spec}
	for _, rule := range strings.Split(spec, ",") {
		rule = strings.TrimSpace(rule)
		switch {
		case strings.HasPrefix(rule, "exit-after-write:"):
			n, err := strconv.Atoi(strings.TrimPrefix(rule, "exit-after-write:"))
			if err != nil || n < 1 {
				return nil, fmt.Errorf("%s: %q: want exit-after-write:N with N >= 1", FaultEnv, rule)
			}
			h.afterWrite = n
		case strings.HasPrefix(rule, "exit-after:"), strings.HasPrefix(rule, "after-"):
			step := sysfs.Step(strings.TrimPrefix(strings.TrimPrefix(rule, "exit-after:"), "after-"))
			if !containsStep(step) {
				return nil, fmt.Errorf("%s: %q: unknown step %q (want one of %v)", FaultEnv, rule, step, faultSteps)
			}
			h.afterStep = step
		default:
			return nil, fmt.Errorf("%s: unknown rule %q (want exit-after-write:N, exit-after:STEP or after-STEP)", FaultEnv, rule)
		}
	}
	return h, nil
}

func containsStep(s sysfs.Step) bool {
	for _, f := range faultSteps {
		if f == s {
			return true
		}
	}
	return false
}

// afterWriteEvent is the Binder's after-write callback.
func (h *faultHook) afterWriteEvent(ev sysfs.WriteEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.writes++
	if (h.afterWrite > 0 && h.writes == h.afterWrite) || (h.afterStep != "" && ev.Step == h.afterStep) {
		fmt.Fprintf(h.stderr, "sriov-cdi: %s=%s: exiting after write %d (%s of %s: %q to %s, err=%v)\n",
			FaultEnv, h.spec, h.writes, ev.Step, ev.Device, strings.TrimSpace(ev.Value), ev.Path, ev.Err)
		h.exit(FaultExitCode) // holds mu: no other write is counted or acknowledged meanwhile
	}
}
