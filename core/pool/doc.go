// Package pool decides, as pure functions over plain data, which devices
// each configured pool hands out (Build), whether each is healthy, and which
// devices to prefer for an allocation (Prefer). It reads nothing and writes
// nothing: the host arrives as a sysfs.Host snapshot.
package pool
