package nri

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"go.uber.org/zap"
)

// Defaults of Options.
const (
	DefaultPluginName = "sriov-cdi"
	DefaultPluginIdx  = "10"
	DefaultSocketPath = api.DefaultSocketPath
	maxRetryInterval  = 30 * time.Second
)

// Options say how the plugin connects to the runtime.
type Options struct {
	// SocketPath is the runtime's NRI socket (DefaultSocketPath if empty).
	SocketPath string
	// PluginName and PluginIdx register the plugin as "<idx>-<name>"
	// (defaults DefaultPluginIdx, DefaultPluginName). When the runtime
	// launched the plugin, its NRI_PLUGIN_* environment wins.
	PluginName, PluginIdx string
	// RetryInterval is the first delay before reconnecting after the
	// runtime closed the connection or refused it; it doubles up to 30s.
	// Default 1s.
	RetryInterval time.Duration
	// Dial connects to SocketPath; nil dials the Unix socket. Tests use it
	// to cut the connection as a runtime restart would.
	Dial func(path string) (net.Conn, error)
	// AllVendors acts on every vendor's cdi.k8s.io/* annotations, not only
	// on ours (Policy.AllVendors).
	AllVendors bool
}

// Plugin handles CreateContainer.
type Plugin struct {
	log    *zap.Logger
	specs  Specs
	policy Policy
}

var _ stub.CreateContainerInterface = (*Plugin)(nil)

// NewPlugin returns the plugin. specs resolves CDI device names and tells
// which kinds are ours (a *cdi.Cache of the CDI library over the runtime's
// spec directories); nil limits the plugin to folding identical device
// entries (and, with p.AllVendors, the sandbox rule).
func NewPlugin(log *zap.Logger, specs Specs, p Policy) *Plugin {
	if log == nil {
		log = zap.NewNop()
	}
	return &Plugin{log: log, specs: specs, policy: p}
}

// CreateContainer implements stub.CreateContainerInterface.
func (p *Plugin) CreateContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	d := Decide(pod, ctr, p.specs, p.policy)
	if d.Empty() && len(d.Keep) == 0 && len(d.Conflicts) == 0 {
		return nil, nil, nil
	}
	log := p.log.With(zap.String("pod", pod.GetNamespace()+"/"+pod.GetName()), zap.String("container", ctr.GetName()))
	for _, r := range d.Remove {
		log.Info("removing CDI annotation so it is not injected again", zap.String("annotation", r.Key), zap.String("reason", r.Reason))
	}
	for _, k := range d.Keep {
		log.Debug("keeping CDI annotation", zap.String("annotation", k.Key), zap.String("reason", k.Reason))
	}
	for _, dev := range d.Dedupe {
		log.Info("folding duplicate device entries", zap.String("device", dev.Path))
	}
	for _, c := range d.Conflicts {
		entries := make([]string, len(c.Entries))
		for i, e := range c.Entries {
			entries[i] = describe(e)
		}
		log.Warn("conflicting entries for one device path; left as they are", zap.String("device", c.Path), zap.Strings("entries", entries))
	}
	if d.Extra > 0 {
		log.Warn("device listed more than twice; one adjustment folds only one duplicate per path", zap.Int("left", d.Extra))
	}
	return d.Adjustment(), nil, nil
}

// Run connects the plugin to the runtime and serves it until ctx is done,
// reconnecting (with backoff) when the runtime restarts or is not up yet.
// When the runtime launched the plugin itself (NRI_PLUGIN_SOCKET is set),
// a lost connection ends Run with an error: the runtime restarts it.
func Run(ctx context.Context, log *zap.Logger, specs Specs, o Options) error {
	if log == nil {
		log = zap.NewNop()
	}
	if o.SocketPath == "" {
		o.SocketPath = DefaultSocketPath
	}
	if o.PluginName == "" {
		o.PluginName = DefaultPluginName
	}
	if o.PluginIdx == "" {
		o.PluginIdx = DefaultPluginIdx
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = time.Second
	}
	launched := os.Getenv(api.PluginSocketEnvVar) != ""
	p := NewPlugin(log, specs, Policy{AllVendors: o.AllVendors})
	delay := o.RetryInterval
	for {
		opts := []stub.Option{stub.WithLogger(nriLogger{log.Sugar()})}
		if os.Getenv(api.PluginNameEnvVar) == "" {
			opts = append(opts, stub.WithPluginName(o.PluginName))
		}
		if os.Getenv(api.PluginIdxEnvVar) == "" {
			opts = append(opts, stub.WithPluginIdx(o.PluginIdx))
		}
		if !launched {
			opts = append(opts, stub.WithSocketPath(o.SocketPath))
			if o.Dial != nil {
				opts = append(opts, stub.WithDialer(o.Dial))
			}
		}
		s, err := stub.New(p, opts...)
		if err != nil {
			return fmt.Errorf("create NRI plugin %q: %w", o.PluginIdx+"-"+o.PluginName, err)
		}
		started := time.Now()
		err = s.Run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if launched {
			return fmt.Errorf("NRI connection from the runtime closed: %w", err)
		}
		if err == nil {
			err = errors.New("connection closed")
		}
		if time.Since(started) > time.Minute {
			delay = o.RetryInterval
		}
		log.Warn("NRI plugin disconnected; reconnecting", zap.String("socket", o.SocketPath), zap.Error(err), zap.Duration("retryIn", delay))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(delay*2, maxRetryInterval)
	}
}

// describe is a device entry for the log: "c 243:1", then the mode and
// owner where set.
func describe(d *api.LinuxDevice) string {
	s := fmt.Sprintf("%s %d:%d", d.Type, d.Major, d.Minor)
	if m := d.GetFileMode(); m != nil {
		s += fmt.Sprintf(" mode=%#o", m.GetValue())
	}
	if u := d.GetUid(); u != nil {
		s += fmt.Sprintf(" uid=%d", u.GetValue())
	}
	if g := d.GetGid(); g != nil {
		s += fmt.Sprintf(" gid=%d", g.GetValue())
	}
	return s
}

// nriLogger adapts zap to the NRI stub's logger.
type nriLogger struct{ s *zap.SugaredLogger }

func (l nriLogger) Debugf(_ context.Context, f string, a ...any) { l.s.Debugf(f, a...) }
func (l nriLogger) Infof(_ context.Context, f string, a ...any)  { l.s.Infof(f, a...) }
func (l nriLogger) Warnf(_ context.Context, f string, a ...any)  { l.s.Warnf(f, a...) }
func (l nriLogger) Errorf(_ context.Context, f string, a ...any) { l.s.Errorf(f, a...) }
