#!/usr/bin/env bash
# Prepares the host the way a udev-managed Debian host is prepared, then starts virtlogd and
# libvirtd if they are not running (there is no systemd in CI containers).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E "$0" "$@"
fi

# /dev/kvm as udev's rule leaves it (systemd's 50-udev-default.rules on Debian: group kvm,
# mode 0660). Without udev the node stays root-only: libvirt then probes QEMU as root (KVM
# present) but validates its capability cache as the QEMU user (KVM absent), finds the cache
# outdated and probes again on every call, ~56 s per `virsh define`. Only when udev is not
# running: a host where udev runs keeps whatever its rules decided.
kvm_device() {
  local dev=/dev/kvm qemu_user=libvirt-qemu
  [ -c "$dev" ] || return 0
  if [ -S /run/udev/control ] || pgrep -x systemd-udevd >/dev/null || pgrep -x udevd >/dev/null; then
    return 0
  fi
  getent group kvm >/dev/null || groupadd --system kvm
  if id "$qemu_user" >/dev/null 2>&1 && ! id -nG "$qemu_user" | tr ' ' '\n' | grep -qx kvm; then
    usermod -a -G kvm "$qemu_user"
  fi
  local before
  before=$(stat -c '%A %U:%G' "$dev")
  if [ "$(stat -c '%G %a' "$dev")" != "kvm 660" ]; then
    chgrp kvm "$dev"
    chmod 0660 "$dev"
    echo "start-libvirtd: no udev here: $dev was $before, set to $(stat -c '%A %U:%G' "$dev") as Debian's udev rule does"
  fi
}
kvm_device

# By pid file, not by process name: tests run private libvirtd and virtlogd daemons of their
# own (hack/private-libvirtd.sh) in other mount namespaces, and a zombie keeps its name.
running() {
  local pid state
  pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] || return 1
  state=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
  [ "${state:0:1}" != "Z" ]
}
if ! running /run/virtlogd.pid; then
  virtlogd -d
fi
if ! virsh -c qemu:///system version >/dev/null 2>&1 && ! running /run/libvirtd.pid; then
  # Under tini as a subreaper: the QEMUs libvirtd daemonizes are reparented to it and reaped
  # the moment they exit, as systemd does on a real host. Without it they go to this
  # machine's init, which reaps every ~2 s, and libvirt's destroy and migration's
  # confirm step wait for the zombie (kill -0 every 200 ms) that long.
  if command -v tini >/dev/null; then
    mkdir -p /var/log/libvirt
    setsid tini -s -- libvirtd </dev/null >>/var/log/libvirt/libvirtd.out 2>&1 &
  else
    echo "start-libvirtd: no tini (hack/install-deps.sh installs it): exited QEMUs wait for init to reap them" >&2
    libvirtd -d
  fi
fi
for _ in $(seq 1 50); do
  if virsh -c qemu:///system version >/dev/null 2>&1; then
    echo "start-libvirtd: libvirtd answers on qemu:///system"
    exit 0
  fi
  sleep 0.2
done
echo "start-libvirtd: libvirtd did not answer on qemu:///system within 10 s" >&2
exit 1
