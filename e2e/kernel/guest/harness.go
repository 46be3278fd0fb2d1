package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// Result lines are parsed by e2e/kernel/run.sh; every other line the driver
// prints is indented so that it can never be mistaken for one.
var outMu sync.Mutex

func emit(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}

// skipError marks a scenario whose prerequisite (usually a product feature)
// is missing. It is never a pass.
type skipError struct{ reason string }

func (e *skipError) Error() string { return e.reason }

func skipf(format string, args ...any) error {
	return &skipError{reason: fmt.Sprintf(format, args...)}
}

// T is the handle a scenario gets: logging plus the PASS-line details.
type T struct {
	name    string
	h       *harness
	details []string
	cleanup []func()
}

func (t *T) Logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	for _, l := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
		emit("  [%s] %s", t.name, l)
	}
}

// Detail adds a short key=value to the PASS line (timings, counts).
func (t *T) Detail(format string, args ...any) {
	t.details = append(t.details, fmt.Sprintf(format, args...))
}

// Cleanup registers f to run after the scenario, last registered first.
func (t *T) Cleanup(f func()) { t.cleanup = append(t.cleanup, f) }

type scenario struct {
	name    string
	timeout time.Duration
	run     func(t *T) error
}

type harness struct {
	cli        string // path of the sriov-cdi binary in the guest
	cliMissing string // why there is no usable CLI ("" if there is one)
	work       string
	only       map[string]bool
	lab        *lab
	nic        *nicLab // the NIC machine (run.sh --machine nic) instead of lab
	broken     string  // set after a scenario timed out: the rest cannot trust the state
	passed     int
	failed     int
	skipped    int
}

func (h *harness) runAll(scs []scenario) {
	for _, sc := range scs {
		if len(h.only) > 0 && !h.only[sc.name] {
			continue
		}
		h.runOne(sc)
	}
	emit("E2E END passed=%d failed=%d skipped=%d", h.passed, h.failed, h.skipped)
}

func (h *harness) runOne(sc scenario) {
	if h.broken != "" {
		h.report(sc.name, &skipError{reason: "not run: " + h.broken}, nil)
		return
	}
	t := &T{name: sc.name, h: h}
	emit("  === %s", sc.name)
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		done <- sc.run(t)
	}()
	timeout := sc.timeout
	if timeout == 0 {
		timeout = 150 * time.Second
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		err = fmt.Errorf("timed out after %s", timeout)
		h.broken = sc.name + " timed out"
	}
	for i := len(t.cleanup) - 1; i >= 0; i-- {
		if h.broken == "" {
			t.cleanup[i]()
		}
	}
	t.Detail("took=%s", time.Since(start).Round(time.Millisecond))
	h.report(sc.name, err, t.details)
}

func (h *harness) report(name string, err error, details []string) {
	var skip *skipError
	switch {
	case err == nil:
		h.passed++
		emit("E2E PASS %s %s", name, oneLine(strings.Join(details, " ")))
	case errors.As(err, &skip):
		h.skipped++
		emit("E2E SKIP %s %s", name, oneLine(skip.reason))
	default:
		h.failed++
		// The full error first (it may span lines), then the one-line result.
		for _, l := range strings.Split(err.Error(), "\n") {
			emit("  [%s] error: %s", name, l)
		}
		emit("E2E FAIL %s %s", name, oneLine(err.Error()))
	}
}

// cmdResult is a finished command.
type cmdResult struct {
	stdout, stderr string
	dur            time.Duration
	err            error
}

func (r cmdResult) String() string {
	return fmt.Sprintf("err=%v stdout=%q stderr=%q", r.err, tail(r.stdout, 1500), tail(r.stderr, 1500))
}

func run(timeout time.Duration, env []string, name string, args ...string) cmdResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %s", name, strings.Join(args, " "), timeout)
	}
	return cmdResult{stdout: so.String(), stderr: se.String(), dur: time.Since(start), err: err}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// cliRun runs the product CLI.
func (h *harness) cliRun(timeout time.Duration, args ...string) cmdResult {
	return run(timeout, nil, h.cli, args...)
}

// needCLI returns a skip error unless `sriov-cdi <sub> --help` succeeds.
func (h *harness) needCLI(sub ...string) error {
	if h.cliMissing != "" {
		return skipf("no sriov-cdi CLI: %s", h.cliMissing)
	}
	args := append(append([]string{}, sub...), "--help")
	r := h.cliRun(30*time.Second, args...)
	if r.err != nil {
		return skipf("`sriov-cdi %s` not implemented yet (%s --help: %v: %s)",
			strings.Join(sub, " "), strings.Join(sub, " "), r.err, oneLine(tail(r.stderr+r.stdout, 200)))
	}
	return nil
}

// needFlags returns a skip error unless the help text of a subcommand
// mentions every flag.
func (h *harness) needFlags(sub string, flags ...string) error {
	if err := h.needCLI(sub); err != nil {
		return err
	}
	r := h.cliRun(30*time.Second, sub, "--help")
	help := r.stdout + r.stderr
	var missing []string
	for _, f := range flags {
		if !strings.Contains(help, f) {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return skipf("`sriov-cdi %s` lacks %s", sub, strings.Join(missing, " "))
	}
	return nil
}

// cliHasString reports whether the CLI binary contains s (used to detect
// hooks that have no flag, such as the SRIOV_CDI_FAULT environment variable).
func (h *harness) cliHasString(s string) bool {
	if h.cliMissing != "" {
		return false
	}
	b, err := os.ReadFile(h.cli)
	return err == nil && bytes.Contains(b, []byte(s))
}

// Product functions whose presence in the CLI binary tells that a feature
// is wired in (Go keeps every linked function's name for tracebacks, and
// the linker drops unreferenced ones). Renaming them makes the scenarios
// that probe for them SKIP, naming the symbol, never pass.
const (
	symBinder    = "github.com/sriov-cdi/sriov-cdi/core/binding.(*Manager).Prepare"
	symCDIWriter = "github.com/sriov-cdi/sriov-cdi/cdi.(*Writer).Sync"
)

// needLinked returns a skip error unless the CLI binary links every symbol.
func (h *harness) needLinked(what string, syms ...string) error {
	for _, s := range syms {
		if !h.cliHasString(s) {
			return skipf("%s not wired into the CLI yet (%s is not linked)", what, s)
		}
	}
	return nil
}

// dmesgTail prints the last n kernel log lines into the scenario log.
func dmesgTail(t *T, n int) {
	r := run(10*time.Second, nil, "dmesg")
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("dmesg (last %d lines):\n%s", len(lines), strings.Join(lines, "\n"))
}
