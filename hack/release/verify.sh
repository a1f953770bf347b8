#!/usr/bin/env bash
# Verifies a dist/ made by hack/release.sh (hack/release.sh runs it last):
#
#   hack/release/verify.sh DIST
#
# - the sums hold; skopeo reads each image archive and its digest is the one install.yaml pins;
# - each image unpacks with umoci, and from its root filesystem (chroot, as the image's user)
#   the entrypoint answers --version with this release and commit; every program in it finds
#   all its shared libraries there (the agent: libvirt's client library, qemu-img,
#   genisoimage, iptables); nothing is set-user-ID; libvirt's socket directory is where the
#   DaemonSet mounts it;
# - install.yaml passes the official schemas of Kubernetes 1.32-1.35; the local control plane
#   (hack/devcluster) accepts the CRDs and install.yaml server-side, validates the examples
#   against the CRDs (server-side dry run) and refuses a broken VM;
# - the agent of the image, run from its root filesystem as the DaemonSet runs it (its
#   arguments, every volume it mounts, a read-only root, its capabilities only, no new
#   privileges; libvirt's test driver and scratch host directories), reaches the API server
#   and answers the DaemonSet's probes on the DaemonSet's port's paths.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd -P)"
dist="$(cd "${1:?usage: $0 DIST}" && pwd -P)"
# The release build's flags must not leak into the debug build of the control plane.
unset RUSTFLAGS CFLAGS CXXFLAGS IRONVISOR_COMMIT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ironvisor-target}"
export CARGO_INCREMENTAL=0
# hack/install-deps.sh's virtualenv: kubernetes-validate, and the Python (with PyYAML) that
# turns install.yaml into JSON.
KUBERNETES_VENV=/opt/ironvisor-venv
KUBERNETES_PYTHON="$KUBERNETES_VENV/bin/python3"

work="$(mktemp -d /var/tmp/ironvisor-verify.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
ok() { echo "verify: ok: $*"; }
fail() { echo "verify: FAILED: $*" >&2; exit 1; }

(cd "$dist" && sha256sum -c --quiet SHA256SUMS) || fail "SHA256SUMS does not match dist/"
ok "SHA256SUMS"

# Unpacks IMAGE into $work/IMAGE/bundle; prints its root filesystem.
unpack() {
  local image="$1" archive="$dist/images/ironvisor-$1.oci.tar" dir="$work/$1"
  mkdir -p "$dir/layout"
  tar -xf "$archive" -C "$dir/layout"
  local tag
  tag="$(jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"]' "$dir/layout/index.json")"
  umoci unpack --image "$dir/layout:$tag" "$dir/bundle" >/dev/null || fail "umoci cannot unpack $archive"
  echo "$dir/bundle/rootfs"
}

# Every ELF program under the root filesystem finds its libraries inside it.
check_libraries() {
  local rootfs="$1" f missing=""
  while IFS= read -r f; do
    head -c4 "$rootfs/$f" | grep -q 'ELF' || continue
    out="$(chroot "$rootfs" /lib64/ld-linux-x86-64.so.2 --list "/$f" 2>&1)" || true
    if grep -q 'not found' <<<"$out"; then missing+="/$f: $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"$'\n'; fi
  done < <(cd "$rootfs" && { find usr/bin usr/sbin usr/local/bin -type f -perm -u+x
                               # iptables' match and target modules, loaded at run time
                               find usr/lib/x86_64-linux-gnu/xtables -name '*.so'; } 2>/dev/null)
  [ -z "$missing" ] || fail "libraries missing in $rootfs:"$'\n'"$missing"
}

for image in operator agent console; do
  archive="$dist/images/ironvisor-$image.oci.tar"
  info="$(skopeo inspect "oci-archive:$archive")" || fail "skopeo cannot read $archive"
  config="$(skopeo inspect --config "oci-archive:$archive")"
  digest="$(jq -r .Digest <<<"$info")"
  grep -q "ironvisor-$image@$digest" "$dist/install.yaml" || fail "install.yaml does not pin ironvisor-$image@$digest"
  ok "ironvisor-$image: skopeo reads it, install.yaml pins $digest"
  version="$(jq -r '.Labels["org.opencontainers.image.version"]' <<<"$info")"
  commit="$(jq -r '.Labels["org.opencontainers.image.revision"]' <<<"$info")"
  user="$(jq -r .config.User <<<"$config")"
  entry="$(jq -r '.config.Entrypoint[0]' <<<"$config")"
  rootfs="$(unpack "$image")"
  said="$(chroot --userspec="$user" "$rootfs" "$entry" --version)" || fail "$entry --version failed in ironvisor-$image"
  [ "$said" = "ironvisor-$image $version (commit $commit)" ] || fail "$entry --version says '$said'"
  ok "ironvisor-$image: as $user, '$entry --version' says '$said'"
  check_libraries "$rootfs"
  ok "ironvisor-$image: every program finds all its shared libraries in the image"
  setid="$(find "$rootfs" -perm /6000 -type f)"
  [ -z "$setid" ] || fail "set-user/group-ID files in ironvisor-$image: $setid"
done

rootfs_agent="$work/agent/bundle/rootfs"
for tool in "qemu-img --version" "genisoimage --version" "iptables --version" "ip6tables --version"; do
  # shellcheck disable=SC2086
  chroot "$rootfs_agent" $tool >/dev/null 2>&1 || fail "'$tool' does not run in ironvisor-agent"
done
ok "ironvisor-agent: qemu-img, genisoimage, iptables and ip6tables run"
grep -q '/run/libvirt' "$rootfs_agent/usr/lib/x86_64-linux-gnu/libvirt.so.0" || fail "libvirt0 does not look under /run/libvirt"
[ "$(readlink "$rootfs_agent/var/run")" = "../run" ] || fail "/var/run is not a link to /run in ironvisor-agent"
grep -q 'mountPath: /var/run/libvirt' "$dist/install.yaml" || fail "the DaemonSet does not mount /var/run/libvirt"
ok "ironvisor-agent: libvirt's /run/libvirt is the DaemonSet's /var/run/libvirt mount"

for k in 1.32.0 1.33.0 1.34.0 1.35.0; do
  "$KUBERNETES_VENV/bin/kubernetes-validate" --strict --quiet -k "$k" "$dist/install.yaml" \
    || fail "install.yaml is not valid for Kubernetes $k"
done
ok "install.yaml is valid against the schemas of Kubernetes 1.32-1.35"

cargo build -q --locked -p ironvisor-devcluster
export KUBECONFIG="$work/kubeconfig"
"$CARGO_TARGET_DIR/debug/ironvisor-devcluster" --listen 127.0.0.1:0 --no-tls \
  --kubeconfig "$KUBECONFIG" > "$work/devcluster.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  [ -s "$KUBECONFIG" ] && kubectl get --raw /readyz >/dev/null 2>&1 && break
  sleep 0.2
done
kubectl get --raw /readyz >/dev/null || fail "the local control plane did not start ($work/devcluster.log)"
kubectl apply --server-side -f "$dist/crds.yaml" >/dev/null
# The control plane serves the custom resources and the built-in kinds Ironvisor's
# controllers use, not workloads (Deployment, DaemonSet, Service): those objects of
# install.yaml are checked by the schemas above and not sent. Nothing of an API group the
# CRDs define may be among them.
"$KUBERNETES_PYTHON" -c 'import json, sys, yaml
print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))' "$dist/install.yaml" > "$work/install.json" \
  || fail "install.yaml is not YAML"
served='[]'
for av in $(jq -r '.[].apiVersion' "$work/install.json" | LC_ALL=C sort -u); do
  case "$av" in */*) path="/apis/$av" ;; *) path="/api/$av" ;; esac
  kinds="$(kubectl get --raw "$path" 2>/dev/null |
    jq -c --arg av "$av" '[.resources[] | select(.name | contains("/") | not) | "\($av) \(.kind)"]')" || kinds='[]'
  served="$(jq -c --argjson k "${kinds:-[]}" '. + $k' <<<"$served")"
done
jq --argjson s "$served" '{apiVersion: "v1", kind: "List",
  items: [.[] | select("\(.apiVersion) \(.kind)" as $k | $s | index($k))]}' "$work/install.json" > "$work/served.json"
unserved="$(jq -r --argjson s "$served" '.[] | select("\(.apiVersion) \(.kind)" as $k | $s | index($k) | not)
  | "\(.apiVersion) \(.kind)/\(.metadata.name)"' "$work/install.json")"
crd_groups="$(jq -r '.[] | select(.kind == "CustomResourceDefinition") | .spec.group' "$work/install.json" | sort -u)"
while read -r av _; do
  [ -n "$av" ] || continue
  if grep -qx "${av%/*}" <<<"$crd_groups"; then
    fail "the control plane does not serve $av, which install.yaml's CRDs define"
  fi
done <<<"$unserved"
kubectl apply --server-side -f "$work/served.json" >/dev/null || fail "the control plane refuses install.yaml"
echo "verify: note: not sent to the control plane (schema-checked only): $(tr '\n' ' ' <<<"$unserved")"
# A dry run creates nothing, so the namespaces the examples' objects live in (made by the
# examples' own Namespace when applied for real) are created first.
"$KUBERNETES_PYTHON" -c 'import glob, json, sys, yaml
names = sorted({d["metadata"]["namespace"] for f in sorted(glob.glob(sys.argv[1] + "/*.yaml"))
                for d in yaml.safe_load_all(open(f)) if d and d.get("metadata", {}).get("namespace")})
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names]}))' \
  "$ROOT/manifests/examples" | kubectl apply --server-side -f - >/dev/null \
  || fail "cannot create the examples' namespaces"
kubectl apply --server-side --dry-run=server -f "$ROOT/manifests/examples/" >/dev/null \
  || fail "the examples do not pass the CRDs (server-side dry run)"
broken='{"apiVersion":"ironvisor.io/v1alpha1","kind":"VirtualMachine","metadata":{"name":"broken","namespace":"default"},"spec":{"cpu":{"cores":"many"}}}'
if kubectl apply --server-side --dry-run=server -f - <<<"$broken" >/dev/null 2>&1; then
  fail "the server-side dry run accepted a broken VirtualMachine: it validates nothing"
fi
ok "install.yaml's CRDs, RBAC, policies and namespace apply server-side; the examples pass the CRDs; a broken VM is refused"

ds="$(jq '.[] | select(.kind == "DaemonSet" and .metadata.name == "ironvisor-agent")' "$work/install.json")"
[ -n "$ds" ] || fail "install.yaml has no DaemonSet ironvisor-agent"
container="$(jq '.spec.template.spec.containers[0]' <<<"$ds")"
mapfile -t args < <(jq -r '.args[]' <<<"$container")
port="$(jq -r '.ports[] | select(.name == "metrics") | .containerPort' <<<"$container")"
for probe in readinessProbe livenessProbe; do
  [ "$(jq -r ".$probe.httpGet.port" <<<"$container")" = metrics ] || fail "$probe is not on the metrics port"
done
printf '%s\n' "${args[@]}" | grep -qx -- "--metrics-addr=0.0.0.0:$port" || fail "the agent does not serve on the probes' port $port"
# The agent as the DaemonSet runs it, on libvirt's test driver and a free port: every volume
# of the DaemonSet mounted where it says (a hostPath directory or emptyDir is a scratch
# directory, a hostPath file or device is the host's own, readOnly mounts read-only), the
# image's root read-only (readOnlyRootFilesystem), no capability beyond the DaemonSet's (and
# CAP_SYS_CHROOT, which the chroot itself needs) and no new privileges. The API server is
# reached with a kubeconfig put in the service account token's directory.
free="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
run_args=()
for a in "${args[@]}"; do
  case "$a" in
    --libvirt-uri=*) run_args+=(--libvirt-uri=test:///default) ;;
    --metrics-addr=*) run_args+=("--metrics-addr=127.0.0.1:$free") ;;
    --accel=*) run_args+=(--accel=tcg) ;;
    *) run_args+=("$a") ;;
  esac
done
pod="$(jq '.spec.template.spec' <<<"$ds")"
[ "$(jq -r '.securityContext.readOnlyRootFilesystem' <<<"$container")" = true ] \
  || fail "the agent's container does not have a read-only root filesystem"
[ "$(jq -r '.securityContext.allowPrivilegeEscalation' <<<"$container")" = false ] \
  || fail "the agent's container allows privilege escalation"
caps="$(jq -r '[.securityContext.capabilities.add[] | ascii_downcase | "+" + .] | join(",")' <<<"$container")"
binds=() token_dir=""
while IFS=$'\t' read -r target ro source kind; do
  case "$kind" in
    Directory|DirectoryOrCreate|emptyDir|projected)
      from="$work/volumes$target"; mkdir -p "$from"
      if [ "$kind" = projected ]; then token_dir="$target"; cp "$KUBECONFIG" "$from/kubeconfig"; fi ;;
    File|CharDevice)
      from="$source"
      [ -e "$from" ] || { echo "verify: note: the host has no $from (the DaemonSet's $kind); not mounted"; continue; } ;;
    *) fail "the DaemonSet mounts $target from a volume of kind '$kind' this check does not know" ;;
  esac
  if [ -d "$from" ]; then mkdir -p "$rootfs_agent$target"
  else mkdir -p "$(dirname "$rootfs_agent$target")"; touch "$rootfs_agent$target"; fi
  binds+=("$from" "$target" "$ro")
done < <(jq -r '.volumes as $v | .containers[0].volumeMounts[] | . as $m
  | ($v[] | select(.name == $m.name)) as $vol
  | [$m.mountPath, ($m.readOnly // false | tostring),
     ($vol.hostPath.path // "-"),
     (if $vol.hostPath then ($vol.hostPath.type // "Directory") elif $vol.emptyDir then "emptyDir"
      elif $vol.projected then "projected" else "unknown" end)] | @tsv' <<<"$pod")
[ -n "$token_dir" ] || fail "the DaemonSet mounts no service account token"
for m in /proc /sys /dev; do mkdir -p "$rootfs_agent$m"; done
NODE_NAME=verify-node unshare --mount --propagation private sh -c '
  set -e
  r="$1"; caps="$2"; token="$3"; shift 3
  mount --bind "$r" "$r"
  mount --rbind /proc "$r/proc"
  mount --rbind /sys "$r/sys"
  mount --rbind /dev "$r/dev"
  while [ "$1" != -- ]; do
    mount --bind "$1" "$r$2"
    [ "$3" = false ] || mount -o remount,bind,ro "$r$2"
    shift 3
  done
  shift
  mount -o remount,bind,ro "$r"
  exec setpriv --no-new-privs --bounding-set "-all,+sys_chroot,$caps" \
    chroot "$r" /usr/local/bin/ironvisor-agent --kubeconfig="$token/kubeconfig" "$@"
' verify "$rootfs_agent" "$caps" "$token_dir" "${binds[@]}" -- "${run_args[@]}" > "$work/agent.log" 2>&1 &
pids+=($!)
for path in $(jq -r '.readinessProbe.httpGet.path, .livenessProbe.httpGet.path' <<<"$container"); do
  code=000
  for _ in $(seq 150); do
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$free$path" || true)"
    [ "$code" = 200 ] && break
    sleep 0.2
  done
  [ "$code" = 200 ] || { cat "$work/agent.log" >&2; fail "the image's agent answers $path with $code"; }
done
kubectl get hypervisor verify-node >/dev/null 2>&1 || { cat "$work/agent.log" >&2; fail "the image's agent did not register its host"; }
ok "the image's agent, with the DaemonSet's arguments and mounts, registers its host and answers its probes"
echo "verify: everything holds"
