package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	ucli "github.com/urfave/cli/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sriov-cdi/sriov-cdi/core/binding"
	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/plugin"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// Flags of the bind, unbind and restore commands.
const (
	bindFlagStateFile = "state-file"
	bindFlagAll       = "all"
	bindFlagDryRun    = "dry-run"
	bindFlagTimeout   = "timeout"
)

// The plugin's Allocate and these commands share one code path.
var (
	_ plugin.Preparer = binding.ForAllocate{}
)

func bindingFlags() []ucli.Flag {
	return append(hostFlags(),
		stateFileFlag(),
		&ucli.BoolFlag{Name: bindFlagAll, Usage: "every device (bind/unbind: of every vfio pool; restore: in the state file)"},
		&ucli.BoolFlag{Name: bindFlagDryRun, Usage: "print what would change and change nothing"},
		&ucli.DurationFlag{Name: bindFlagTimeout, Value: 10 * time.Second, Usage: "limit for each sysfs write and each wait for the kernel", Sources: ucli.EnvVars("SRIOV_CDI_BIND_TIMEOUT")},
		&ucli.BoolFlag{Name: flagSample, Usage: "plan on the bundled sysfs snapshot of a real kernel and its config, with an empty state file (with --dry-run only)"},
	)
}

// sampleSetup checks that --sample comes with --dry-run (the snapshot is
// another host's, unpacked in a temporary directory: changing it would
// show nothing) and returns the state file to use: with --sample an empty
// one in the sample's directory unless --state-file is given.
func sampleSetup(cmd *ucli.Command, in *hostInput) (string, error) {
	if !cmd.Bool(flagSample) {
		return cmd.String(bindFlagStateFile), nil
	}
	if !cmd.Bool(bindFlagDryRun) {
		return "", fmt.Errorf("%s --sample: only a dry run can use the sample (a snapshot of another host in a temporary directory): add --dry-run, or drop --sample to act on this host", cmd.Name)
	}
	if cmd.IsSet(bindFlagStateFile) {
		return cmd.String(bindFlagStateFile), nil
	}
	return filepath.Join(in.dir, "state.json"), nil
}

// bindCommand, unbindCommand and restoreCommand run the code path the
// plugin's Allocate runs (binding.Manager), with the same interlocks and
// the same state file.
func bindCommand() *ucli.Command    { return bindCommandWith() }
func unbindCommand() *ucli.Command  { return unbindCommandWith() }
func restoreCommand() *ucli.Command { return restoreCommandWith() }

// The ...With variants take extra binding options; tests pass the fake
// kernel (sysfstest.Kernel) as the writer.
func bindCommandWith(extra ...binding.Option) *ucli.Command {
	return &ucli.Command{
		Name:      "bind",
		Usage:     "bind devices of vfio pools to vfio-pci (whole IOMMU groups), as Allocate would",
		ArgsUsage: "[ADDR...]",
		Flags:     bindingFlags(),
		Action: func(ctx context.Context, cmd *ucli.Command) error {
			return runBindChange(ctx, cmd, true, extra)
		},
	}
}

func unbindCommandWith(extra ...binding.Option) *ucli.Command {
	return &ucli.Command{
		Name:      "unbind",
		Usage:     "detach devices of vfio pools from their driver and leave them driverless (restore brings them back)",
		ArgsUsage: "[ADDR...]",
		Flags:     bindingFlags(),
		Action: func(ctx context.Context, cmd *ucli.Command) error {
			return runBindChange(ctx, cmd, false, extra)
		},
	}
}

func restoreCommandWith(extra ...binding.Option) *ucli.Command {
	return &ucli.Command{
		Name:      "restore",
		Usage:     "return devices to the driver recorded in the state file before sriov-cdi changed it",
		ArgsUsage: "[ADDR...]",
		Flags:     bindingFlags(),
		Action: func(ctx context.Context, cmd *ucli.Command) error {
			return runRestore(ctx, cmd, extra)
		},
	}
}

// bindingArgs checks that exactly one of ADDR... and --all was given.
func bindingArgs(cmd *ucli.Command) ([]sysfs.Address, error) {
	args := cmd.Args().Slice()
	all := cmd.Bool(bindFlagAll)
	switch {
	case all && len(args) > 0:
		return nil, fmt.Errorf("%s: give addresses or --all, not both", cmd.Name)
	case !all && len(args) == 0:
		return nil, fmt.Errorf("%s: name at least one PCI address (dddd:bb:dd.f) or use --all", cmd.Name)
	}
	var addrs []sysfs.Address
	var errs []error
	for _, s := range args {
		a, err := sysfs.ParseAddress(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		addrs = append(addrs, a)
	}
	return addrs, errors.Join(errs...)
}

func bindingManager(ctx context.Context, cmd *ucli.Command, root sysfs.Root, state string, extra []binding.Option) (*binding.Manager, error) {
	opts := append([]binding.Option{binding.WithTimeout(cmd.Duration(bindFlagTimeout)), binding.WithContext(ctx)}, extra...)
	if cmd.Bool(bindFlagDryRun) {
		opts = append(opts, binding.ReadOnly())
	}
	return binding.NewManager(root, state, bindingLogger(cmd.Root().ErrWriter), opts...)
}

// bindingLogger logs one line per event to w.
func bindingLogger(w io.Writer) *zap.Logger {
	enc := zap.NewDevelopmentEncoderConfig()
	enc.TimeKey = ""
	// Binding runs units in parallel: the sink must take concurrent writes.
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), zap.InfoLevel))
}

// poolRequest is the units of one pool a command acts on.
type poolRequest struct {
	pool  *pool.Pool
	units []pool.Unit
}

// resolveUnits maps addresses (a unit's ID or any member) to the units of
// the plan, grouped by pool in config order. --all takes every unit of
// every vfio pool. Unknown addresses and addresses no pool hands out are
// errors naming them, with the planner's reason.
func resolveUnits(plan *pool.Plan, h *sysfs.Host, addrs []sysfs.Address, all bool) ([]poolRequest, error) {
	var reqs []poolRequest
	if all {
		for i := range plan.Pools {
			p := &plan.Pools[i]
			if p.Mode == config.ModeVFIO && len(p.Units) > 0 {
				reqs = append(reqs, poolRequest{pool: p, units: p.Units})
			}
		}
		if len(reqs) == 0 {
			return nil, errors.New("--all: no vfio pool hands out any device")
		}
		return reqs, nil
	}
	byPool := map[string]*poolRequest{}
	var order []string
	var errs []error
next:
	for _, a := range addrs {
		for i := range plan.Pools {
			p := &plan.Pools[i]
			for _, u := range p.Units {
				if u.ID != a && !containsAddr(u.Members, a) {
					continue
				}
				r := byPool[p.Name]
				if r == nil {
					r = &poolRequest{pool: p}
					byPool[p.Name] = r
					order = append(order, p.Name)
				}
				if !containsUnit(r.units, u.ID) {
					r.units = append(r.units, u)
				}
				continue next
			}
		}
		if h.Device(a) == nil {
			errs = append(errs, fmt.Errorf("%s: no such PCI function on this host", a))
			continue
		}
		reason := "matches no pool's selectors"
		for _, r := range plan.Unselected {
			if r.Address == a {
				reason = r.Reason
				if r.Pool != "" {
					reason = fmt.Sprintf("pool %q refuses it: %s", r.Pool, r.Reason)
				}
			}
		}
		errs = append(errs, fmt.Errorf("%s: not handed out by any pool: %s", a, reason))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, n := range order {
		reqs = append(reqs, *byPool[n])
	}
	return reqs, nil
}

func containsAddr(list []sysfs.Address, a sysfs.Address) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

func containsUnit(list []pool.Unit, id sysfs.Address) bool {
	for _, u := range list {
		if u.ID == id {
			return true
		}
	}
	return false
}

func runBindChange(ctx context.Context, cmd *ucli.Command, bind bool, extra []binding.Option) error {
	addrs, err := bindingArgs(cmd)
	if err != nil {
		return err
	}
	if cmd.Bool(flagSample) && !cmd.Bool(bindFlagDryRun) {
		_, err := sampleSetup(cmd, nil)
		return err
	}
	in, err := loadHost(cmd)
	if err != nil {
		return err
	}
	defer in.cleanup()
	state, err := sampleSetup(cmd, in)
	if err != nil {
		return err
	}
	if in.cfg == nil {
		return fmt.Errorf("%s: --config is required: the pools say which devices may be bound and from which drivers", cmd.Name)
	}
	h, err := sysfs.Scan(in.root, scanOptions(in.root)...)
	if err != nil {
		return err
	}
	plan := pool.Build(in.cfg, h, pool.WithHeld(binding.NewHoldings(state).Held()))
	reqs, err := resolveUnits(plan, h, addrs, cmd.Bool(bindFlagAll))
	if err != nil {
		return err
	}
	m, err := bindingManager(ctx, cmd, in.root, state, extra)
	if err != nil {
		return err
	}
	out := cmd.Root().Writer
	dry := cmd.Bool(bindFlagDryRun)
	var errs []error
	for _, r := range reqs {
		pc := r.pool.Config
		planFn, doFn := m.PlanPrepare, m.PrepareByOperator
		if !bind {
			planFn, doFn = m.PlanUnbind, m.Unbind
		}
		// Planning applies the same checks as the change; with --dry-run
		// it is all that runs.
		changes, err := planFn(pc, r.units)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !dry {
			if err := doFn(ctx, pc, r.units); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		printChanges(out, changes, dry)
	}
	return errors.Join(errs...)
}

func runRestore(ctx context.Context, cmd *ucli.Command, extra []binding.Option) error {
	addrs, err := bindingArgs(cmd)
	if err != nil {
		return err
	}
	root, state := sysfs.Root{Sys: cmd.String(flagSysfsRoot), Dev: cmd.String(flagDevRoot)}, cmd.String(bindFlagStateFile)
	if cmd.Bool(flagSample) {
		in := &hostInput{}
		if cmd.Bool(bindFlagDryRun) {
			if in, err = loadHost(cmd); err != nil {
				return err
			}
			defer in.cleanup()
		}
		if state, err = sampleSetup(cmd, in); err != nil {
			return err
		}
		root = in.root
	}
	m, err := bindingManager(ctx, cmd, root, state, extra)
	if err != nil {
		return err
	}
	all := cmd.Bool(bindFlagAll)
	sel := addrs
	if all {
		sel = nil
	}
	changes, err := m.PlanRestore(sel)
	if err != nil {
		return err
	}
	dry := cmd.Bool(bindFlagDryRun)
	if !dry {
		if all {
			err = m.RestoreAll(ctx)
		} else {
			err = m.Restore(ctx, addrs)
		}
		if err != nil {
			return err
		}
	}
	printChanges(cmd.Root().Writer, changes, dry)
	return nil
}

func printChanges(w io.Writer, changes []binding.Change, dry bool) {
	verb := "changed"
	if dry {
		verb = "would change"
	}
	if len(changes) == 0 {
		fmt.Fprintln(w, "nothing to change")
		return
	}
	for _, c := range changes {
		fmt.Fprintf(w, "%s %s (pool %s, group %s, unit %s): %s -> %s\n", verb, c.Device, c.Pool, groupOrDash(c.Group), c.Unit, c.From, c.To)
	}
}

func groupOrDash(g string) string {
	if g == "" {
		return "-"
	}
	return g
}
