#!/bin/busybox sh
# shellcheck shell=dash
# /init of the e2e-kernel guest: mount the pseudo filesystems, load the module
# closure, run the guest driver, power off. The guest driver prints the
# "E2E ..." result lines and the "E2E END" marker; a missing marker means the
# run broke (see e2e/kernel/run.sh).
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts

KVER=$(uname -r)
echo "E2E INFO kernel ${KVER} cmdline: $(cat /proc/cmdline)"
while read -r m; do
	if ! insmod "/lib/modules/${KVER}/${m}" 2>/tmp/insmod.err; then
		grep -q 'File exists' /tmp/insmod.err || echo "E2E INFO insmod ${m}: $(cat /tmp/insmod.err)"
	fi
done </etc/e2e-modules
ip link set lo up
# The kernel's request_module() helper (busybox modprobe reads modules.dep).
echo /sbin/modprobe >/proc/sys/kernel/modprobe

/e2e/guest -cli /e2e/sriov-cdi -work /run/e2e
echo "E2E INFO guest driver exited with status $?"
echo "E2E INFO dmesg follows"
dmesg | sed 's/^/K: /'
sync
poweroff -f
