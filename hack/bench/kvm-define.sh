#!/usr/bin/env bash
# `virsh define` of the bench domain on a host as a fresh machine leaves it (/dev/kvm root-only:
# crw------- root:root, no udev) and on the same host after the project's set-up fix
# (hack/start-libvirtd.sh: crw-rw---- root:kvm, as Debian's udev rule does), side by side in
# one run. Each "host" is a private system-mode libvirtd (hack/private-libvirtd.sh) with its own
# /dev/kvm node, so the shared libvirtd and /dev/kvm are never touched.
#
#   hack/bench/kvm-define.sh            # 3 defines per host
#   COUNT=10 hack/bench/kvm-define.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E "$0" "$@"
fi
COUNT="${COUNT:-3}"
hack/install-deps.sh >/dev/null

work=$(mktemp -d /var/tmp/ironvisor-kvm-define-XXXXXX)
chmod 755 "$work"
cleanup() {
  for h in before after; do
    [ -d "$work/$h" ] && hack/private-libvirtd.sh stop "$work/$h" || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# The bench's diskless guest: what bench-density and bench-overhead define, 64 MiB, TCG.
domain_xml() {
  cat <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><serial type='pty'/><console type='pty'/></devices>
</domain>
EOF
}

echo "==> starting two private libvirtd hosts (a fresh machine's /dev/kvm, and after the fix)"
start_s=$(date +%s.%N)
hack/private-libvirtd.sh start "$work/before" --kvm-mode 600 --kvm-group root >"$work/before.uri" &
hack/private-libvirtd.sh start "$work/after" --kvm-mode 660 --kvm-group kvm >"$work/after.uri" &
wait
echo "    both answer after $(awk -v a="$start_s" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"

measure() { # host -> one define time in ms per line
  local host=$1 uri i t0 t1
  uri=$(cat "$work/$host.uri")
  for i in $(seq 1 "$COUNT"); do
    domain_xml "bench-define-$host-$i" >"$work/$host-$i.xml"
    t0=$(date +%s%N)
    virsh -q -c "$uri" define "$work/$host-$i.xml" >/dev/null
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
    virsh -q -c "$uri" undefine "bench-define-$host-$i" >/dev/null
  done
}

echo "==> $COUNT defines on each host"
measure before >"$work/before.ms"
measure after >"$work/after.ms"

stats() { sort -n "$1" | awk '{a[NR]=$1} END {printf "%d %d %d", a[1], a[int((NR+1)/2)], a[NR]}'; }
read -r b_min b_p50 b_max <<<"$(stats "$work/before.ms")"
read -r a_min a_p50 a_max <<<"$(stats "$work/after.ms")"
printf '\n%-34s %10s %10s %10s\n' "virsh define (ms)" min p50 max
printf '%-34s %10d %10d %10d\n' "before: /dev/kvm crw------- root:root" "$b_min" "$b_p50" "$b_max"
printf '%-34s %10d %10d %10d\n' "after:  /dev/kvm crw-rw---- root:kvm" "$a_min" "$a_p50" "$a_max"
printf 'before/after at p50: %sx\n' "$(awk -v b="$b_p50" -v a="$a_p50" 'BEGIN {printf "%.0f", b / (a > 0 ? a : 1)}')"
printf 'BENCH_JSON {"bench":"kvm-define","count":%d,"before_ms":[%s],"after_ms":[%s]}\n' "$COUNT" \
  "$(paste -sd, "$work/before.ms")" "$(paste -sd, "$work/after.ms")"
