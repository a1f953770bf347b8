#!/usr/bin/env bash
# A libvirtd "host" of its own: the system-mode daemon (QEMU runs as libvirt-qemu, as on a
# real host) in a private mount namespace with its own run, state, cache, log and config
# directories, and its own /dev/kvm node whose mode and group the caller chooses. Tests and
# benchmarks use it to reproduce a host the shared machine must never be turned into (for
# example a fresh host's root-only /dev/kvm) without touching the shared libvirtd or /dev/kvm.
#
#   hack/private-libvirtd.sh start DIR [--kvm-mode 600] [--kvm-group root] [--net SWITCH ADDR/PREFIX]
#                                      [--userfaultfd]
#       prints the URI (qemu+unix:///system?socket=DIR/run/libvirt-sock) when it answers.
#       With --net the daemon (and so every QEMU it starts) also gets a network namespace of
#       its own whose only link is a veth with ADDR on a bridge in the namespace SWITCH (made
#       by the first host that names it): hosts on one SWITCH reach each other there, never
#       through the machine's own interfaces (live migration tests). Each host gets its own
#       host UUID, or libvirt refuses a migration between two of them as "the same host".
#       With --userfaultfd its QEMUs may use userfaultfd(2), which post-copy migration needs:
#       on this kernel (vm.unprivileged_userfaultfd=0, QEMU 7.2 without /dev/userfaultfd) only
#       a process with CAP_SYS_PTRACE may, so this host runs QEMU as root with its
#       capabilities kept (qemu.conf user/group root, clear_emulator_capabilities = 0, and
#       dynamic_ownership = 0 so shared images keep their owners). A real
#       host that wants post-copy sets vm.unprivileged_userfaultfd=1 instead (docs/migration-live.md).
#   hack/private-libvirtd.sh exec DIR -- CMD ARGS...
#       runs CMD inside the daemon's mount (and network) namespace
#   hack/private-libvirtd.sh stop DIR
#       destroys and undefines its domains, stops the daemons, removes its network namespace
#       (and SWITCH when no host is left on it), removes DIR
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E "$0" "$@"
fi

usage() { sed -n '8,26p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 dir=$2
shift 2
marker="$dir/.ironvisor-private-libvirtd"
uri="qemu+unix:///system?socket=$dir/run/libvirt-sock"
# Network namespace and veth names derived from DIR (interface names are at most 15 bytes).
tag=$(printf '%s' "$(realpath -m "$dir")" | sha256sum | cut -c1-8)
hostns="ivh-$tag"

# The bridge namespace SWITCH, made once; then a veth from it into this host's namespace.
net_up() {
  local switch=$1 addr=$2
  if ! ip netns list | grep -qw "^$switch"; then
    ip netns add "$switch"
    ip -n "$switch" link add ivbr0 type bridge
    ip -n "$switch" link set ivbr0 up
  fi
  ip netns add "$hostns"
  ip link add "ivs$tag" netns "$switch" type veth peer name eth0 netns "$hostns"
  ip -n "$switch" link set "ivs$tag" master ivbr0 up
  ip -n "$hostns" link set lo up
  ip -n "$hostns" addr add "$addr" dev eth0
  ip -n "$hostns" link set eth0 up
  echo "$switch" > "$dir/switch"
}

net_down() {
  [ -f "$dir/switch" ] || return 0
  local switch
  switch=$(cat "$dir/switch")
  ip netns del "$hostns" 2>/dev/null || true
  # The veth went with the host's namespace; the switch goes when no port is left on it.
  if ip netns list | grep -qw "^$switch" &&
    [ -z "$(ip -n "$switch" -o link show master ivbr0 2>/dev/null)" ]; then
    ip netns del "$switch" 2>/dev/null || true
  fi
}

start() {
  local mode=600 group=root switch="" addr="" userfaultfd=""
  while [ $# -gt 0 ]; do
    case $1 in
      --kvm-mode) mode=$2; shift 2 ;;
      --kvm-group) group=$2; shift 2 ;;
      --net) switch=$2; addr=$3; shift 3 ;;
      --userfaultfd) userfaultfd=1; shift ;;
      *) usage ;;
    esac
  done
  [ -c /dev/kvm ] || { echo "private-libvirtd: the host has no /dev/kvm to stand in for" >&2; exit 1; }
  mkdir -p "$dir"/{run,lib/qemu,cache/qemu,log/qemu,etc}
  touch "$marker"
  chmod 755 "$dir" "$dir/run"
  cp -a /etc/libvirt/. "$dir/etc/"
  # The shared daemon's configuration, not its domains nor networks that would start here.
  rm -f "$dir"/etc/qemu/*.xml "$dir"/etc/qemu/autostart/* "$dir"/etc/qemu/networks/autostart/*
  echo "host_uuid = \"$(cat /proc/sys/kernel/random/uuid)\"" >> "$dir/etc/libvirtd.conf"
  if [ -n "$userfaultfd" ]; then
    # Root needs no file handed over: libvirt leaves the owners of images (shared with
    # other hosts' QEMUs running as libvirt-qemu) alone.
    printf 'user = "root"\ngroup = "root"\nclear_emulator_capabilities = 0\ndynamic_ownership = 0\nremember_owner = 0\n' \
      >> "$dir/etc/qemu.conf"
  fi
  rm -f "$dir/kvm"
  mknod "$dir/kvm" c "$(stat -c '%t' /dev/kvm | xargs -I{} printf '%d' 0x{})" \
    "$(stat -c '%T' /dev/kvm | xargs -I{} printf '%d' 0x{})"
  chgrp "$group" "$dir/kvm"
  chmod "$mode" "$dir/kvm"
  local netexec=()
  if [ -n "$switch" ]; then
    net_up "$switch" "$addr"
    netexec=(ip netns exec "$hostns")
  fi
  "${netexec[@]}" unshare -m --propagation private bash -c '
    set -e
    d=$1
    mount --bind "$d/run" /run/libvirt
    mount --bind "$d/lib" /var/lib/libvirt
    mount --bind "$d/cache" /var/cache/libvirt
    mount --bind "$d/log" /var/log/libvirt
    mount --bind "$d/etc" /etc/libvirt
    mount --bind "$d/kvm" /dev/kvm
    virtlogd -d -p "$d/virtlogd.pid"
    # Under tini as a subreaper, as hack/start-libvirtd.sh starts the shared daemon.
    if command -v tini >/dev/null; then
      setsid tini -s -- libvirtd -p "$d/libvirtd.pid" </dev/null >>"$d/libvirtd.out" 2>&1 &
    else
      libvirtd -d -p "$d/libvirtd.pid"
    fi
  ' _ "$dir"
  for _ in $(seq 1 300); do
    if virsh -c "$uri" version >/dev/null 2>&1; then
      echo "$uri"
      return 0
    fi
    sleep 0.2
  done
  echo "private-libvirtd: the daemon in $dir did not answer within 60 s" >&2
  exit 1
}

in_namespace() {
  [ "${1:-}" = "--" ] && shift
  [ $# -gt 0 ] || usage
  local pid
  pid=$(cat "$dir/libvirtd.pid")
  exec nsenter --mount="/proc/$pid/ns/mnt" --net="/proc/$pid/ns/net" -- "$@"
}

stop() {
  # Only a directory this script made: never remove anything on inference.
  [ -e "$marker" ] || { echo "private-libvirtd: $dir was not made by this script; left alone" >&2; exit 1; }
  if virsh -c "$uri" version >/dev/null 2>&1; then
    for d in $(virsh -c "$uri" list --all --name); do
      virsh -c "$uri" destroy "$d" >/dev/null 2>&1 || true
      virsh -c "$uri" undefine --nvram "$d" >/dev/null 2>&1 || virsh -c "$uri" undefine "$d" >/dev/null 2>&1 || true
    done
  fi
  for p in libvirtd virtlogd; do
    if [ -f "$dir/$p.pid" ]; then
      kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
    fi
  done
  for _ in $(seq 1 50); do
    alive=0
    for p in libvirtd virtlogd; do
      [ -f "$dir/$p.pid" ] && kill -0 "$(cat "$dir/$p.pid")" 2>/dev/null && alive=1
    done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  net_down
  rm -rf "$dir"
}

case $cmd in
  start) start "$@" ;;
  exec) in_namespace "$@" ;;
  stop) stop ;;
  *) usage ;;
esac
