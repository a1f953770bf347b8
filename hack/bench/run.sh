#!/usr/bin/env bash
# Builds Ironvisor in release and runs the four benchmarks with their default sizes (the full
# sizes of the issues: 100 VMs, 10,000 VMs over 100 hosts, 1,000 VMs on one agent).
# Figures go to stdout (a table and a BENCH_JSON line each) and to $OUT/*.json.
#
#   hack/bench/run.sh                 # everything on test:///default
#   QEMU=1 hack/bench/run.sh          # also density and overhead on qemu:///system
#   MIGRATION=1 hack/bench/run.sh     # also live migration, ours vs virsh migrate (two netns hosts)
#   CONSOLE=1 hack/bench/run.sh       # also console round trips (API path vs libvirt's stream) and
#                                     # desktop claim → console connected (with and without spares)
#   QEMU_COUNT=10 SCALE_VMS=2000 FOOTPRINT_VMS=500 hack/bench/run.sh   # smaller runs
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ironvisor-target}"
OUT="${OUT:-$CARGO_TARGET_DIR/bench-results}"
mkdir -p "$OUT"

echo "==> building in release (agent, operator, devcluster, console server, bench)"
cargo build --release -p ironvisor-agent -p ironvisor-operator -p ironvisor-devcluster \
  -p ironvisor-console -p ironvisor-bench --bins
BIN="$CARGO_TARGET_DIR/release"

echo "==> density on test:///default"
"$BIN/bench-density" --count "${DENSITY_COUNT:-100}" --json "$OUT/density-test.json"
echo "==> overhead on test:///default"
"$BIN/bench-overhead" --count "${OVERHEAD_COUNT:-100}" --json "$OUT/overhead-test.json"
echo "==> footprint"
"$BIN/bench-footprint" --count "${FOOTPRINT_VMS:-1000}" --json "$OUT/footprint.json"
echo "==> scale"
"$BIN/bench-scale" --vms "${SCALE_VMS:-10000}" --hosts "${SCALE_HOSTS:-100}" --json "$OUT/scale.json"

if [ -n "${QEMU:-}" ]; then
  hack/start-libvirtd.sh
  echo "==> density on qemu:///system (tiny diskless guests, TCG)"
  "$BIN/bench-density" --libvirt-uri qemu:///system --count "${QEMU_COUNT:-50}" --json "$OUT/density-qemu.json"
  echo "==> overhead on qemu:///system"
  "$BIN/bench-overhead" --libvirt-uri qemu:///system --count "${QEMU_COUNT:-50}" --json "$OUT/overhead-qemu.json"
fi
if [ -n "${MIGRATION:-}" ]; then
  echo "==> live migration between two private libvirtd hosts, ours vs virsh migrate"
  "$BIN/bench-migration" --rounds "${MIGRATION_ROUNDS:-4}" --json "$OUT/migration.json"
fi
if [ -n "${CONSOLE:-}" ]; then
  hack/start-libvirtd.sh
  echo "==> serial console round trips, API path vs libvirt's console stream (tiny guest, TCG)"
  "$BIN/bench-console" --keys "${CONSOLE_KEYS:-200}" --json "$OUT/console.json"
  echo "==> desktop claim → console connected, with and without spares"
  "$BIN/bench-desktop" --rounds "${DESKTOP_ROUNDS:-10}" --json "$OUT/desktop.json"
fi
echo "==> results in $OUT"
