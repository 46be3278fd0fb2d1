package dra

import (
	"context"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"
)

// The publisher owns the resourceslice controller (the one the helper's
// PublishResources would start on the first publish) so that its start
// overlaps the first scan: the controller's constructor waits for its
// ResourceSlice informer by polling once a second, a second that would
// otherwise come after the plan was ready. Publish never blocks: it
// records the newest resources and the publisher hands them on.
//
// Started before the first plan, the controller holds no pools. Slices the
// previous process published are then synced syncDelay after the
// informer listed them and, were the first plan still missing, deleted.
// So the publisher stops an idle controller at half of syncDelay and
// starts a new one with the plan when it comes (a plan that late costs the
// second, not the slices).
type publisher struct {
	driverName, nodeName string
	client               kubernetes.Interface
	log                  *zap.Logger
	// onError gets the controller's errors (Driver.HandleError, marked
	// recoverable, as the helper does).
	onError func(ctx context.Context, err error, msg string)
	// onPublished is called after the controller took res, number seq.
	onPublished func(res *resourceslice.DriverResources, seq uint64)
	// want returns the newest resources and their number (counting from
	// 1); nil when the controller has them or before the first plan.
	want func() (*resourceslice.DriverResources, uint64)
	// kick wakes the publisher (buffered, 1).
	kick chan struct{}
	// syncDelay is the controller's (resourceslice.DefaultSyncDelay).
	syncDelay time.Duration
}

// recoverable marks the controller's errors for HandleError
// (errors.Is(err, kubeletplugin.ErrRecoverable)), as the helper does:
// retrying or restarting would not resolve them.
type recoverable struct{ error }

func (recoverable) Is(target error) bool { return target == kubeletplugin.ErrRecoverable }
func (e recoverable) Unwrap() error      { return e.error }

func (p *publisher) start(ctx context.Context, res *resourceslice.DriverResources) (*resourceslice.Controller, error) {
	return resourceslice.StartController(ctx, resourceslice.Options{
		DriverName: p.driverName,
		KubeClient: p.client,
		// The node owns the slices: they go with it, and the controller
		// manages the node's slices of this driver only.
		Owner:     &resourceslice.Owner{APIVersion: "v1", Kind: "Node", Name: p.nodeName},
		Resources: res,
		SyncDelay: &p.syncDelay,
		ErrorHandler: func(ctx context.Context, err error, msg string) {
			p.onError(ctx, recoverable{err}, msg)
		},
	})
}

// run publishes until ctx ends; then it stops the controller.
func (p *publisher) run(ctx context.Context) {
	t0 := time.Now()
	ctl, err := p.start(ctx, &resourceslice.DriverResources{})
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		p.log.Error("start the ResourceSlice controller; retrying with the first plan", zap.Error(err))
	} else {
		p.log.Info("ResourceSlice controller started", zap.Duration("took", time.Since(t0)))
	}
	var pub uint64 // the number of the resources ctl holds; 0: none yet
	// The informer listed the old slices during start: stop an idle
	// controller well before syncDelay has passed since then.
	idle := time.NewTimer(p.syncDelay/2 - time.Since(t0))
	defer idle.Stop()
	retry := time.NewTimer(0)
	<-retry.C
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			if ctl != nil {
				ctl.Stop()
			}
			return
		case <-idle.C:
			if pub == 0 && ctl != nil {
				p.log.Warn("no plan yet: the idle ResourceSlice controller stops before it would delete the slices published before; it starts again with the first plan",
					zap.Duration("since", time.Since(t0)))
				ctl.Stop()
				ctl = nil
			}
			continue
		case <-p.kick:
		case <-retry.C:
		}
		want, seq := p.want()
		if want == nil || seq == pub {
			continue
		}
		if ctl == nil {
			if ctl, err = p.start(ctx, want); err != nil {
				ctl = nil
				if ctx.Err() != nil {
					return
				}
				p.log.Error("start the ResourceSlice controller; retrying in 5 s", zap.Error(err))
				retry.Reset(5 * time.Second)
				continue
			}
		} else {
			ctl.Update(want)
		}
		pub = seq
		p.onPublished(want, seq)
	}
}
