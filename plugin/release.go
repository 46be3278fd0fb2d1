package plugin

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/sriov-cdi/sriov-cdi/plugin/binding"
	"github.com/sriov-cdi/sriov-cdi/plugin/deviceinfo"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// PodLister is the part of kubelet's PodResources API the plugin uses (the
// release watcher of vfio bindings uses the same).
type PodLister = binding.PodLister

// deviceInfoGrace is how long a device-info file may exist before kubelet
// lists its device as assigned (Allocate writes it before kubelet records
// the assignment).
const deviceInfoGrace = 2 * time.Minute

// releaseDeviceInfo removes the device-info files of devices no container
// holds any more, as kubelet's PodResources API reports them. It runs until
// ctx ends; a failed poll removes nothing.
func (m *Manager) releaseDeviceInfo(ctx context.Context, lister PodLister, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := m.pollReleases(ctx, lister, time.Now()); err != nil {
			m.log.Debug("device-info release poll failed; nothing removed", zap.Error(err))
		}
	}
}

// pollReleases lists assigned devices and removes, per pool, the files of
// devices not among them whose file is older than the grace period.
func (m *Manager) pollReleases(ctx context.Context, lister PodLister, now time.Time) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := lister.List(cctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		return err
	}
	assigned := binding.AssignedDevices(resp)
	w := m.opts.DeviceInfo
	for _, e := range m.snapshotEndpoints() {
		res := e.ep.resource
		p, _, _, _ := e.srv.snapshot()
		var released []sysfs.Address
		for _, u := range p.Units {
			if assigned[res][u.ID] {
				continue
			}
			st, err := os.Stat(filepath.Join(w.Dir, deviceinfo.FileName(res, u.ID)))
			if err == nil && now.Sub(st.ModTime()) > deviceInfoGrace {
				released = append(released, u.ID)
			}
		}
		if len(released) == 0 {
			continue
		}
		if err := w.Remove(res, released...); err != nil {
			m.log.Warn("remove device-info files of released devices", zap.String("resource", res), zap.Error(err))
			continue
		}
		for _, id := range released {
			m.log.Info("device released; device-info file removed", zap.String("device", string(id)), zap.String("resource", res))
		}
	}
	return nil
}
