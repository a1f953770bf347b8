#!/usr/bin/env bash
# The demo, from a fresh Debian 12 machine: installs what is missing, builds, starts libvirtd,
# builds the tiny guest, starts the local control plane, the operator and one agent
# (qemu:///system, software emulation), applies the CRDs and manifests/examples/, waits until
# both VMs run, and leaves everything running.
#
#   hack/demo.sh          start (or re-start what is missing); safe to run twice
#   hack/demo.sh stop     stop everything the demo started (the VMs' domains included)
#   hack/demo.sh status   show what runs
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E "$0" "$@"
fi

STATE=${IRONVISOR_DEMO_DIR:-/var/tmp/ironvisor-demo}
PORT=${IRONVISOR_DEMO_PORT:-6480}
NODE=${IRONVISOR_DEMO_NODE:-$(hostname -s)}
IMAGES=/var/lib/ironvisor/images
export KUBECONFIG="$STATE/kubeconfig"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ironvisor-target}"
BIN="$CARGO_TARGET_DIR/debug"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

start_bg() { # name, command...
  local name=$1; shift
  if alive "$name"; then
    echo "$name already running (pid $(cat "$STATE/$name.pid"))"
    return
  fi
  nohup "$@" >>"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
  echo "$name started (pid $!, log $STATE/logs/$name.log)"
}

stop_all() {
  for name in agent operator devcluster; do
    if alive "$name"; then
      kill "$(cat "$STATE/$name.pid")" && echo "stopped $name"
    fi
    rm -f "$STATE/$name.pid"
  done
  # The agent leaves guests running when it stops (it adopts them on restart); the demo's
  # stop command stops them too: only the demo namespace's domains (iv-demo-*), never others.
  for dom in $(virsh -c qemu:///system list --all --name 2>/dev/null | grep '^iv-demo-' || true); do
    virsh -c qemu:///system destroy "$dom" >/dev/null 2>&1 || true
    virsh -c qemu:///system undefine --nvram "$dom" >/dev/null 2>&1 ||
      virsh -c qemu:///system undefine "$dom" >/dev/null 2>&1 || true
    echo "removed domain $dom"
  done
}

case "${1:-start}" in
  stop) stop_all; exit 0 ;;
  status)
    for name in devcluster operator agent; do
      if alive "$name"; then echo "$name: running"; else echo "$name: stopped"; fi
    done
    exit 0 ;;
  start) ;;
  *) echo "usage: hack/demo.sh [start|stop|status]" >&2; exit 2 ;;
esac

mkdir -p "$STATE/logs" "$STATE/agent" "$IMAGES"

step "1/8 system packages"
hack/install-deps.sh

step "2/8 build (cargo build; the first build takes a few minutes on 2 cores)"
# The whole workspace, so features unify as in the tests and their build is reused.
cargo build --locked --workspace --bins

step "3/8 libvirtd"
hack/start-libvirtd.sh

step "4/8 the tiny guest (Debian kernel + busybox initramfs) in $IMAGES"
hack/build-guest.sh "$IMAGES"

step "5/8 local control plane on 127.0.0.1:$PORT"
start_bg devcluster "$BIN/ironvisor-devcluster" --listen "127.0.0.1:$PORT" \
  --kubeconfig "$KUBECONFIG" --tls-kubeconfig "$STATE/kubeconfig-tls" --data-dir "$STATE/devcluster"
for i in $(seq 1 50); do
  kubectl version >/dev/null 2>&1 && break
  [ "$i" -eq 50 ] && { echo "the control plane did not answer; see $STATE/logs/devcluster.log" >&2; exit 1; }
  sleep 0.2
done
kubectl apply -f manifests/namespace.yaml -k manifests/crds >/dev/null 2>&1 ||
  { kubectl apply -f manifests/namespace.yaml && kubectl apply -k manifests/crds; }
kubectl apply -k manifests/rbac >/dev/null
kubectl apply -k manifests/policies >/dev/null
kubectl wait --for=condition=Established --timeout=30s crd --all >/dev/null 2>&1 || true
echo "CRDs, namespace, RBAC and admission policies applied"

# The operator and the agent act as their ServiceAccounts, as in a cluster: the agent with a
# token bound to its node (what a pod's projected token carries), so the policies apply.
sa_kubeconfig() { # SERVICE-ACCOUNT [NODE] -> path of a kubeconfig on the TLS port
  local sa=$1 node=${2:-} out="$STATE/kubeconfig-$1" token
  if [ -n "$node" ]; then
    token=$(kubectl create token "$sa" -n ironvisor-system --duration 24h \
      --bound-object-kind Node --bound-object-name "$node")
  else
    token=$(kubectl create token "$sa" -n ironvisor-system --duration 24h)
  fi
  cp "$STATE/kubeconfig-tls" "$out"
  kubectl --kubeconfig "$out" config set-credentials "$sa" --token "$token" >/dev/null
  kubectl --kubeconfig "$out" config set-context --current --user "$sa" >/dev/null
  echo "$out"
}

step "6/8 operator and agent (node $NODE, qemu:///system, software emulation)"
start_bg operator "$BIN/ironvisor-operator" --kubeconfig "$(sa_kubeconfig ironvisor-operator)" \
  --metrics-addr 127.0.0.1:9090
start_bg agent "$BIN/ironvisor-agent" --node-name "$NODE" \
  --kubeconfig "$(sa_kubeconfig ironvisor-agent "$NODE")" \
  --libvirt-uri qemu:///system --state-dir "$STATE/agent" --images-dir "$IMAGES" \
  --metrics-addr 127.0.0.1:9091 --accel auto

step "7/8 examples: a tenant, a quota, two VMs"
kubectl apply -f manifests/examples/
applied=$SECONDS
echo "waiting for both VMs to run (software emulation: a few seconds)"
deadline=$((SECONDS + 180))
failed_since=""
while :; do
  phases=$(kubectl get vm -n demo -o jsonpath='{range .items[*]}{.metadata.name}={.status.phase}{" "}{end}' 2>/dev/null || true)
  printf '\r  %-70s' "${phases:-no VMs yet} ($((deadline - SECONDS)) s left)"
  running=$(grep -o '=Running' <<<"$phases" | wc -l || true)
  if [ "$running" -ge 2 ]; then
    printf '\n  both VMs Running %d s after kubectl apply' $((SECONDS - applied))
    break
  fi
  # A VM can show Failed for a moment from an earlier run; give the agent 20 s to retry it.
  if grep -q '=Failed' <<<"$phases"; then failed_since=${failed_since:-$SECONDS}; else failed_since=""; fi
  if { [ -n "$failed_since" ] && [ $((SECONDS - failed_since)) -ge 20 ]; } || [ $SECONDS -ge $deadline ]; then
    echo
    kubectl get vm -n demo
    kubectl get vm -n demo -o jsonpath='{range .items[*]}{.metadata.name}: {range .status.conditions[?(@.type=="Ready")]}{.reason}: {.message}{end}{"\n"}{end}' >&2
    echo "the VMs did not reach Running; see $STATE/logs/ and 'kubectl describe vm -n demo'" >&2
    exit 1
  fi
  sleep 1
done
echo

step "8/8 result"
kubectl get vm,hypervisor,tenant,vmq -A
uid=$(kubectl get vm -n demo tiny -o jsonpath='{.metadata.uid}')
console="$STATE/agent/vms/$uid/console.log"
echo
echo "waiting for the first guest (demo/tiny) to print its marker on the serial console"
line=""
for _ in $(seq 1 60); do
  line=$(grep -a -m1 'IRONVISOR-GUEST' "$console" 2>/dev/null || true)
  [ -n "$line" ] && break
  printf '.'
  sleep 1
done
echo
if [ -n "$line" ]; then
  echo "First guest's console ($console): $line"
else
  echo "no marker yet on the first guest's console; read it with: tail -f $console"
fi

cat <<EOF

Everything is running. To explore:
  export KUBECONFIG=$KUBECONFIG
  kubectl get vm -A -w                      # watch the VMs
  kubectl describe vm -n demo tiny          # conditions and events
  $BIN/ivctl -n demo status tiny            # the same, condensed
  $BIN/ivctl -n demo console tiny --state-dir $STATE/agent   # the guest's serial console
  tail -f $STATE/agent/vms/<vm uid>/console.log   # the same, as a file
  $BIN/ivctl -n demo stop web --wait        # runStrategy Halted; 'start' and 'restart' too
  PATH=$BIN:\$PATH kubectl ironvisor -n demo status web   # ivctl as a kubectl plugin
  curl -s 127.0.0.1:9091/metrics | grep ironvisor_   # agent metrics (operator: :9090)
  logs: $STATE/logs/

Stop it all:
  hack/demo.sh stop
EOF
