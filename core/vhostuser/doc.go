// Package vhostuser hands out vhost-user socket directories like devices:
// one directory per allocation under a host base directory, which the
// allocation's CDI edits bind-mount into the container, described by a
// device-info file of type "vhost-user" (k8snetworkplumbingwg
// device-info-spec v1.1.0) and an environment variable. Both front doors
// use it: the device plugin (package plugin; key = slot ID) and the DRA
// kubelet plugin (key = whatever names the allocation there, e.g.
// "<claim UID>-<request>").
//
// It owns two things:
//
//   - Layout (pure): where an allocation's directory and socket are on the
//     host and in the container, and what a container gets — Describe(key)
//     returns the Allocation: HostDir, ContainerDir, socket paths, CDI
//     ContainerEdits (one bind mount and one variable), the device-info
//     content. A host directory is BaseDir/<Prefix><key>; in the container
//     it is ContainerDir/<key>; the socket is <that>/<SocketName>.
//   - Dirs (effects): creating, owning, labelling and removing those
//     directories strictly under BaseDir. Every operation opens BaseDir
//     (following links in BaseDir itself: it is the operator's path) and
//     then works relative to that descriptor with *at system calls and
//     O_NOFOLLOW: a symbolic link planted inside the base or inside an
//     allocation's directory is removed as a link, never followed, so
//     nothing outside BaseDir is ever created, chowned, labelled or
//     removed. Only entries named <Prefix><valid key> are ever touched;
//     foreign files in BaseDir are left alone.
//
// The API a front door uses:
//
//	d, err := vhostuser.ForPool(resource, poolConfig, log)   // or New(Layout, opts...)
//	a, err := d.PrepareFresh(key)  // device plugin Allocate: a new empty dir (a leftover of a released allocation of the same key is removed first)
//	a, err := d.Prepare(key)       // DRA NodePrepareResources: idempotent, an existing dir (and its sockets) is kept, owner/mode/label re-applied
//	// a.Edits -> the CDI spec (device plugin: the slot's device; DRA: the claim's spec), a.Env, a.DeviceInfo -> deviceinfo
//	err = d.Release(key)           // NodeUnprepareResources / a released slot: the dir and everything in it go; absent is fine
//	removed, err := d.Reconcile(func(key string) bool { return held[key] })  // after a restart: dirs of keys not held go
//
// Prepare and PrepareFresh fail with a clear error, creating nothing,
// when BaseDir is missing or not a directory or the key is not a plain
// name ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 128 bytes, no ".."). A
// failure after the directory was made removes it again.
//
// It must not: decide which slots a pool has (core/pool does), write CDI
// spec files (package cdi does, from Describe), write device-info files
// (core/deviceinfo does), or talk to kubelet.
package vhostuser
