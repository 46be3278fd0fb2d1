package sysfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// VFIODriver is the driver a vfio pool binds its functions to.
const VFIODriver = "vfio-pci"

// Step names one stage of a driver change; errors and logs carry it.
type Step string

const (
	StepRead          Step = "read"           // read the current driver and override
	StepSetOverride   Step = "set-override"   // write driver_override
	StepUnbind        Step = "unbind"         // write the address to drivers/<cur>/unbind
	StepProbe         Step = "probe"          // write the address to bus/pci/drivers_probe
	StepBind          Step = "bind"           // write the address to drivers/<want>/bind
	StepClearOverride Step = "clear-override" // write "\n" (or the recorded value) to driver_override
	StepWaitVFIODev   Step = "wait-vfio-dev"  // wait for /dev/vfio/<group>
)

// Errors a Binder returns inside a *StepError; test with errors.Is.
var (
	// ErrTimeout: a write or a wait did not finish in time. For a write,
	// the kernel may still complete it later (the write goes on in the
	// background); the device's state is unknown until read again.
	ErrTimeout = errors.New("timed out; the kernel may still complete the operation")
	// ErrVanished: the function is no longer in sysfs (VF removed, hot
	// unplug).
	ErrVanished = errors.New("device vanished")
	// ErrWritePending: an earlier write to this function timed out and has
	// not returned yet; another write would queue behind it in the kernel.
	ErrWritePending = errors.New("an earlier write to this device has not returned")
	// ErrNotBound: the write succeeded but read-back shows another driver.
	ErrNotBound = errors.New("driver not as expected after the write")
)

// StepError is the failure of one step on one function.
type StepError struct {
	Device Address
	Step   Step
	Err    error
}

func (e *StepError) Error() string { return fmt.Sprintf("%s: %s: %v", e.Device, e.Step, e.Err) }
func (e *StepError) Unwrap() error { return e.Err }

// AttrWriter writes one sysfs attribute. KernelWriter does it on the real
// /sys; tests use sysfstest.Kernel, a fake that reacts to writes the way
// the kernel's PCI core does.
type AttrWriter interface {
	WriteAttr(path, value string) error
}

// KernelWriter writes attributes with one write(2) each, as sysfs wants.
type KernelWriter struct{}

var _ AttrWriter = KernelWriter{}

// WriteAttr implements AttrWriter. It opens the file as `echo value >
// path` does (O_TRUNC is ignored by sysfs). The file must exist: sysfs
// attributes are never created.
func (KernelWriter) WriteAttr(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// State is a function's driver binding as sysfs shows it.
type State struct {
	Driver   string `json:"driver"`   // "" when unbound
	Override string `json:"override"` // "" when unset (sysfs shows "(null)")
}

func (s State) String() string {
	d := s.Driver
	if d == "" {
		d = "no driver"
	}
	if s.Override == "" {
		return d
	}
	return d + " (driver_override " + s.Override + ")"
}

// WriteEvent describes a completed write, for logs and fault hooks.
type WriteEvent struct {
	Device Address
	Step   Step
	Path   string
	Value  string
	Err    error
}

// Binder changes the driver of PCI functions: driver_override + unbind +
// drivers_probe (never new_id, which captures every unbound device with
// the same IDs). Every write is followed by reading the driver link back,
// and every write and wait is bounded by a timeout. A Binder is safe for
// concurrent use on different functions.
type Binder struct {
	root       Root
	w          AttrWriter
	timeout    time.Duration
	poll       time.Duration
	afterWrite func(WriteEvent)

	mu      sync.Mutex
	pending map[Address]string // function -> path of a write that timed out and has not returned
}

// BinderOption configures a Binder.
type BinderOption func(*Binder)

// WithWriter replaces the real sysfs writer (tests: sysfstest.Kernel).
func WithWriter(w AttrWriter) BinderOption { return func(b *Binder) { b.w = w } }

// WithTimeout bounds each write and each wait for the kernel (default 10 s).
func WithTimeout(d time.Duration) BinderOption { return func(b *Binder) { b.timeout = d } }

// WithPollInterval sets how often read-back polls the driver link
// (default 5 ms). Drivers with asynchronous probe (nvme) bind after
// drivers_probe has returned.
func WithPollInterval(d time.Duration) BinderOption { return func(b *Binder) { b.poll = d } }

// WithAfterWrite calls f after every write returns (successful or not),
// from the goroutine that waits for it. Used for logs and fault hooks.
func WithAfterWrite(f func(WriteEvent)) BinderOption { return func(b *Binder) { b.afterWrite = f } }

// NewBinder returns a Binder for root that writes the real sysfs unless
// WithWriter says otherwise.
func NewBinder(root Root, opts ...BinderOption) *Binder {
	b := &Binder{root: root, w: KernelWriter{}, timeout: 10 * time.Second, poll: 5 * time.Millisecond, pending: map[Address]string{}}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Root is the tree the Binder works on.
func (b *Binder) Root() Root { return b.root }

// Pending lists functions with a write that timed out and is still
// blocked in the kernel, and the attribute being written.
func (b *Binder) Pending() map[Address]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[Address]string, len(b.pending))
	for a, p := range b.pending {
		out[a] = p
	}
	return out
}

// Read returns a function's current driver and driver_override. It
// returns ErrVanished (wrapped) when the function is gone.
func (b *Binder) Read(a Address) (State, error) {
	dir := b.root.PCIDevicePath(a)
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return State{}, ErrVanished
		}
		return State{}, err
	}
	var s State
	t, err := os.Readlink(filepath.Join(dir, "driver"))
	switch {
	case err == nil:
		s.Driver = filepath.Base(t)
	case !errors.Is(err, fs.ErrNotExist):
		return State{}, err
	}
	if v, err := os.ReadFile(filepath.Join(dir, "driver_override")); err == nil {
		if o := strings.TrimSpace(string(v)); o != "(null)" {
			s.Override = o
		}
	} else if errors.Is(err, fs.ErrNotExist) {
		// driver_override exists on every PCI function since 3.16;
		// missing means the device went away between the two reads.
		if _, serr := os.Stat(dir); serr != nil {
			return State{}, ErrVanished
		}
	}
	return s, nil
}

// BindVFIO binds a to vfio-pci: driver_override = vfio-pci, unbind from
// the current driver if any, drivers_probe, then read back until vfio-pci
// owns it. A function already on vfio-pci is left as it is. On error the
// function may be half-way (override set, unbound): the caller rolls back
// with Restore to the state it read before.
func (b *Binder) BindVFIO(ctx context.Context, a Address) error {
	return b.Bind(ctx, a, VFIODriver)
}

// Bind makes driver own a through driver_override and drivers_probe, the
// way BindVFIO does for vfio-pci. The override stays set, so that a later
// re-probe (a PF reset, a driver reload) keeps the function where it is.
func (b *Binder) Bind(ctx context.Context, a Address, driver string) error {
	cur, err := b.Read(a)
	if err != nil {
		return &StepError{a, StepRead, err}
	}
	if cur.Driver == driver && cur.Override == driver {
		return nil
	}
	if cur.Override != driver {
		if err := b.setOverride(ctx, a, StepSetOverride, driver); err != nil {
			return err
		}
	}
	if cur.Driver == driver {
		return nil
	}
	if cur.Driver != "" {
		if err := b.unbind(ctx, a, cur.Driver); err != nil {
			return err
		}
	}
	return b.probe(ctx, a, driver)
}

// Unbind detaches a from its driver and leaves it without one. The
// driver_override is cleared first so that nothing re-probes it into a
// driver behind the caller's back.
func (b *Binder) Unbind(ctx context.Context, a Address) error {
	cur, err := b.Read(a)
	if err != nil {
		return &StepError{a, StepRead, err}
	}
	if cur.Override != "" {
		if err := b.setOverride(ctx, a, StepClearOverride, ""); err != nil {
			return err
		}
	}
	if cur.Driver == "" {
		return nil
	}
	return b.unbind(ctx, a, cur.Driver)
}

// Restore returns a to a recorded state: its original driver (or none)
// and its original driver_override. It sets driver_override to the
// original driver, unbinds the current one, re-probes (driver_override
// lets the original driver take the function even where autoprobe would
// not — a VF of a PF with sriov_drivers_autoprobe=0), falls back to
// drivers/<orig>/bind, and finally puts the original override back ("\n"
// clears it). Every step is read back.
func (b *Binder) Restore(ctx context.Context, a Address, orig State) error {
	cur, err := b.Read(a)
	if err != nil {
		return &StepError{a, StepRead, err}
	}
	if cur == orig {
		return nil
	}
	if cur.Driver != orig.Driver {
		if cur.Override != orig.Driver {
			if err := b.setOverride(ctx, a, StepSetOverride, orig.Driver); err != nil {
				return err
			}
		}
		if cur.Driver != "" {
			if err := b.unbind(ctx, a, cur.Driver); err != nil {
				return err
			}
		}
		if orig.Driver != "" {
			if err := b.probe(ctx, a, orig.Driver); err != nil {
				perr := err
				if err := b.bindDirect(ctx, a, orig.Driver); err != nil {
					return errors.Join(perr, err)
				}
			}
		}
	}
	now, err := b.Read(a)
	if err != nil {
		return &StepError{a, StepRead, err}
	}
	if now.Override != orig.Override {
		return b.setOverride(ctx, a, StepClearOverride, orig.Override)
	}
	return nil
}

// WaitVFIOGroup waits until /dev/vfio/<group> exists.
func (b *Binder) WaitVFIOGroup(ctx context.Context, a Address, group string) error {
	p := b.root.VFIOGroupPath(group)
	err := b.waitFor(ctx, func() (bool, error) {
		_, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return &StepError{a, StepWaitVFIODev, fmt.Errorf("wait for %q: %w", p, err)}
	}
	return nil
}

func (b *Binder) setOverride(ctx context.Context, a Address, step Step, driver string) error {
	p := filepath.Join(b.root.PCIDevicePath(a), "driver_override")
	v := driver
	if v == "" {
		v = "\n" // the kernel clears the override on an empty line
	}
	if err := b.write(ctx, a, step, p, v); err != nil {
		return err
	}
	s, err := b.Read(a)
	if err != nil {
		return &StepError{a, step, fmt.Errorf("read back: %w", err)}
	}
	if s.Override != driver {
		return &StepError{a, step, fmt.Errorf("driver_override reads %q after writing %q: %w", s.Override, driver, ErrNotBound)}
	}
	return nil
}

func (b *Binder) unbind(ctx context.Context, a Address, driver string) error {
	p := filepath.Join(b.root.Sys, "bus", "pci", "drivers", driver, "unbind")
	if err := b.write(ctx, a, StepUnbind, p, string(a)); err != nil {
		return err
	}
	return b.expect(ctx, a, StepUnbind, "")
}

func (b *Binder) probe(ctx context.Context, a Address, driver string) error {
	p := filepath.Join(b.root.Sys, "bus", "pci", "drivers_probe")
	if err := b.write(ctx, a, StepProbe, p, string(a)); err != nil {
		return err
	}
	return b.expect(ctx, a, StepProbe, driver)
}

func (b *Binder) bindDirect(ctx context.Context, a Address, driver string) error {
	p := filepath.Join(b.root.Sys, "bus", "pci", "drivers", driver, "bind")
	if _, err := os.Stat(p); err != nil {
		return &StepError{a, StepBind, fmt.Errorf("driver %q is not loaded: %w", driver, err)}
	}
	if err := b.write(ctx, a, StepBind, p, string(a)); err != nil {
		return err
	}
	return b.expect(ctx, a, StepBind, driver)
}

// expect polls the driver link until it names want ("" = unbound).
func (b *Binder) expect(ctx context.Context, a Address, step Step, want string) error {
	var last State
	err := b.waitFor(ctx, func() (bool, error) {
		s, err := b.Read(a)
		if err != nil {
			return false, err
		}
		last = s
		return s.Driver == want, nil
	})
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrTimeout) {
		w := want
		if w == "" {
			w = "no driver"
		}
		err = fmt.Errorf("read back: want %s, have %s after %s: %w", w, last, b.timeout, ErrNotBound)
		if want == VFIODriver && last.Driver == "" {
			err = fmt.Errorf("%w (is the vfio-pci module loaded?)", err)
		}
	}
	return &StepError{a, step, err}
}

func (b *Binder) waitFor(ctx context.Context, done func() (bool, error)) error {
	deadline := time.NewTimer(b.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(b.poll)
	defer tick.Stop()
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-deadline.C:
			return ErrTimeout
		case <-tick.C:
		}
	}
}

// write performs one attribute write in a goroutine and waits for it at
// most the Binder's timeout. A write that does not return in time (a
// driver's remove callback stuck on hardware) is left running and
// recorded in Pending; the function gets no further writes until it
// returns, and the caller gets ErrTimeout.
func (b *Binder) write(ctx context.Context, a Address, step Step, path, value string) error {
	b.mu.Lock()
	if p, ok := b.pending[a]; ok {
		b.mu.Unlock()
		return &StepError{a, step, fmt.Errorf("write %q: %w (to %q)", path, ErrWritePending, p)}
	}
	b.mu.Unlock()

	done := make(chan error, 1)
	go func() {
		err := b.w.WriteAttr(path, value)
		if b.afterWrite != nil {
			b.afterWrite(WriteEvent{Device: a, Step: step, Path: path, Value: value, Err: err})
		}
		done <- err
	}()
	t := time.NewTimer(b.timeout)
	defer t.Stop()
	var err error
	select {
	case err = <-done:
	case <-t.C:
		err = ErrTimeout
	case <-ctx.Done():
		err = fmt.Errorf("%w (the write is still in progress)", context.Cause(ctx))
	}
	if err == nil {
		return nil
	}
	select {
	case e := <-done: // finished while we were deciding
		if e == nil {
			return nil
		}
		err = e
	default:
		if errors.Is(err, ErrTimeout) || ctx.Err() != nil {
			b.mu.Lock()
			b.pending[a] = path
			b.mu.Unlock()
			go func() {
				<-done
				b.mu.Lock()
				delete(b.pending, a)
				b.mu.Unlock()
			}()
		}
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV) {
		if _, serr := os.Stat(b.root.PCIDevicePath(a)); errors.Is(serr, fs.ErrNotExist) {
			err = fmt.Errorf("%w: %w", ErrVanished, err)
		}
	}
	return &StepError{a, step, fmt.Errorf("write %q to %q: %w", strings.TrimSpace(value), path, err)}
}
