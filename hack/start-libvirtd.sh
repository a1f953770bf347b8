#!/usr/bin/env bash
# Starts virtlogd and libvirtd if they are not running (there is no systemd in CI containers).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E "$0" "$@"
fi
if ! pgrep -x virtlogd >/dev/null; then
  virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
  libvirtd -d
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
