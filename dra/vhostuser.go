package dra

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.uber.org/zap"
	resourceapi "k8s.io/api/resource/v1"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/deviceinfo"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/core/vhostuser"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// vhostClaimPrefix starts the directory names of claim uid's slots of a
// DRA vhost-user pool: "sriov-cdi-dra.<pool>.<uid>-" (the slot ID
// follows). The name is stable for the claim and never reused by another
// one (a UID is unique); in the container the slot appears as
// <containerPath>/<slot ID>, as with the device plugin.
func vhostClaimPrefix(poolName, uid string) string {
	return config.VhostUserDRADirPrefix(poolName) + uid + "-"
}

// vhostPrepared is one slot prepared by this call.
type vhostPrepared struct {
	dirs  *vhostuser.Dirs
	alloc vhostuser.Allocation
	rec   *PreparedVhostUser
}

// prepareVhostUser makes (idempotently) the directories of claim uid's
// slots units of vhost-user pool p and writes their device-info files. On
// failure what it made is removed again.
func (d *Driver) prepareVhostUser(p *pool.Pool, uid string, units []pool.Unit) ([]vhostPrepared, error) {
	if err := vhostuser.ValidateKey(uid); err != nil {
		return nil, fmt.Errorf("claim UID cannot name a vhost-user directory: %w", err)
	}
	dirs, err := vhostuser.ForPoolPrefix(p.Resource, p.Config, vhostClaimPrefix(p.Name, uid), d.log.With(zap.String("pool", p.Name), zap.String("uid", uid)))
	if err != nil {
		return nil, err
	}
	var out []vhostPrepared
	for _, u := range units {
		a, err := dirs.Prepare(string(u.ID))
		if err != nil {
			d.releaseVhostUser(out)
			return nil, err
		}
		rec := &PreparedVhostUser{BaseDir: dirs.BaseDir, Prefix: dirs.Prefix, Slot: a.Key, HostDir: a.HostDir,
			ContainerSocket: a.ContainerSocket, SocketMode: string(dirs.SocketMode)}
		out = append(out, vhostPrepared{dirs: dirs, alloc: a, rec: rec})
		if d.o.DeviceInfo != nil {
			id := sysfs.Address(uid + "-" + a.Key)
			if err := d.o.DeviceInfo.WriteInfo(p.Resource, id, a.DeviceInfo); err != nil {
				d.releaseVhostUser(out)
				return nil, fmt.Errorf("device-info file of vhost-user slot %s: %w", a.Key, err)
			}
			rec.DeviceInfo = filepath.Join(d.o.DeviceInfo.Dir, deviceinfo.FileName(p.Resource, id))
		}
	}
	return out, nil
}

// releaseVhostUser undoes prepareVhostUser (a failed prepare).
func (d *Driver) releaseVhostUser(ps []vhostPrepared) {
	for _, vp := range ps {
		if err := releaseSlot(vp.rec, d.log); err != nil {
			d.log.Error("remove the vhost-user directory of a failed prepare", zap.String("device", vp.rec.Slot), zap.String("path", vp.rec.HostDir), zap.Error(err))
		}
	}
}

// releaseSlot removes a prepared slot's directory (and everything in it)
// and its device-info file, from the checkpoint's record alone: the pool
// may be gone from the config since. Absent is fine.
func releaseSlot(rec *PreparedVhostUser, log *zap.Logger) error {
	dirs, err := vhostuser.New(vhostuser.Layout{Resource: "release", BaseDir: rec.BaseDir, Prefix: rec.Prefix,
		ContainerDir: config.DefaultVhostUserContainerDir, SocketName: config.DefaultVhostUserSocketName, SocketMode: config.SocketServer},
		vhostuser.WithLogger(log))
	if err != nil {
		return fmt.Errorf("vhost-user slot %s: checkpoint record: %w", rec.Slot, err)
	}
	if err := dirs.Release(rec.Slot); err != nil {
		return err
	}
	if rec.DeviceInfo != "" {
		if err := os.Remove(rec.DeviceInfo); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove device-info file: %w", err)
		}
	}
	return nil
}

// reconcileVhostUser runs once per DRA vhost-user pool (and base
// directory) after a plan arrives, before any claim of it is prepared:
// directories of the pool whose claim the checkpoint does not hold (a
// crash between making and checkpointing, a claim unprepared while the
// directory could not be removed) go; held ones are kept.
func (d *Driver) reconcileVhostUser(plan *pool.Plan) {
	d.cpMu.Lock()
	defer d.cpMu.Unlock()
	cp := d.prepared.Load()
	for i := range plan.Pools {
		p := &plan.Pools[i]
		if p.Config == nil || p.Config.API != config.APIDRA || p.Mode != config.ModeVhostUser || p.Config.VhostUser == nil {
			continue
		}
		done := p.Name + "\x00" + p.Config.VhostUser.BaseDir
		if d.vhostReconciled[done] {
			continue
		}
		d.vhostReconciled[done] = true
		log := d.log.With(zap.String("pool", p.Name))
		dirs, err := vhostuser.ForPoolPrefix(p.Resource, p.Config, config.VhostUserDRADirPrefix(p.Name), log)
		if err == nil {
			err = dirs.Check()
		}
		if err != nil {
			log.Error("vhost-user pool cannot prepare slots; claims of it fail until this is fixed", zap.Error(err))
			continue
		}
		held := map[string]bool{}
		for uid, c := range cp.Claims {
			for _, pd := range c.Devices {
				if pd.VhostUser != nil && pd.Pool == p.Name {
					held[uid+"-"+pd.VhostUser.Slot] = true
				}
			}
		}
		removed, err := dirs.Reconcile(func(key string) bool { return held[key] })
		for _, k := range removed {
			log.Info("vhost-user directory of a claim not prepared removed", zap.String("device", k))
		}
		if err != nil {
			log.Warn("reconcile vhost-user directories", zap.Error(err))
		}
	}
}

// vhostMetadata is the device metadata (KEP-5304) of a prepared slot: the
// mode, the socket path in the container and the socket mode.
func vhostMetadata(v *PreparedVhostUser, driver string) map[string]resourceapi.DeviceAttribute {
	out := map[string]resourceapi.DeviceAttribute{
		driver + "/" + string(AttrMode):       str(string(config.ModeVhostUser)),
		driver + "/" + string(AttrSocketMode): str(v.SocketMode),
	}
	if len(v.ContainerSocket) <= resourceapi.DeviceAttributeMaxValueLength {
		out[driver+"/"+string(AttrSocketPath)] = str(v.ContainerSocket)
	}
	return out
}
