#!/usr/bin/env bash
# Builds a release into dist/ and verifies it (see docs/release.md):
#
#   hack/release.sh [--registry REGISTRY] [--no-verify]
#
# dist/ then holds:
#   images/ironvisor-{operator,agent,console}.oci.tar   OCI image archives
#   install.yaml     everything `kubectl apply -k manifests/` installs, images pinned by digest
#   crds.yaml        the CustomResourceDefinitions alone (apply them first when upgrading)
#   ivctl            the command line (linux/amd64)
#   sbom.cdx.json    CycloneDX SBOM: the crates in the binaries, the Debian packages in the images
#   SHA256SUMS       sums of all of the above
# REGISTRY (default ghcr.io/ironvisor) is where install.yaml says the images are; the digests
# do not depend on it. Two runs on one commit give the same images, digests and sums.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd -P)"
cd "$ROOT"

registry="ghcr.io/ironvisor"
verify=1
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) registry="${2:?--registry needs a value}"; shift 2 ;;
    --no-verify) verify=0; shift ;;
    *) echo "usage: $0 [--registry REGISTRY] [--no-verify]" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)

step "system packages"
hack/install-deps.sh

# shellcheck source=release/build-env.sh
source hack/release/build-env.sh
version="$(cargo metadata --format-version 1 --no-deps --locked |
  jq -r '.packages[] | select(.name == "ironvisor-agent") | .version')"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "release: the work tree has uncommitted changes; the binaries will not be those of $IRONVISOR_COMMIT" >&2
  exit 1
fi

step "browser console assets (npm ci, compiled into ironvisor-console)"
hack/web-assets.sh --omit-dev

step "release build of $version ($IRONVISOR_COMMIT)"
cargo build --release --locked --bins "${release_packages[@]}" -p ironvisor-release
bin="$CARGO_TARGET_DIR/release"
tool="$bin/ironvisor-release"

dist="$ROOT/dist"
work="$CARGO_TARGET_DIR/release-work"
rm -rf "$dist" "$work/rootfs"
mkdir -p "$dist/images" "$work"

labels=(
  --label "org.opencontainers.image.version=$version"
  --label "org.opencontainers.image.revision=$IRONVISOR_COMMIT"
  --label "org.opencontainers.image.licenses=Apache-2.0"
  --label "org.opencontainers.image.title=ironvisor"
)
path_env="PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
declare -A digest
for image in operator agent console; do
  step "image ironvisor-$image"
  hack/release/rootfs.sh "$image" "hack/release/packages/$image.lock" \
    "$bin/ironvisor-$image" "$work/debs" "$work/rootfs/$image"
  case "$image" in
    operator | console) user="65532:65532" ;;
    agent) user="0:0" ;;
  esac
  digest[$image]="$("$tool" image --rootfs "$work/rootfs/$image" \
    --out "$dist/images/ironvisor-$image.oci.tar" \
    --entrypoint "/usr/local/bin/ironvisor-$image" --user "$user" --env "$path_env" \
    "${labels[@]}" --tag "v$version" --created "$SOURCE_DATE_EPOCH")"
  echo "ironvisor-$image@${digest[$image]}"
done

step "install.yaml, crds.yaml"
overlay="$work/overlay"
rm -rf "$overlay"
mkdir -p "$overlay"
cat > "$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$overlay" "$ROOT/manifests")
images:
  - name: ghcr.io/ironvisor/ironvisor-operator
    newName: $registry/ironvisor-operator
    digest: ${digest[operator]}
  - name: ghcr.io/ironvisor/ironvisor-agent
    newName: $registry/ironvisor-agent
    digest: ${digest[agent]}
  - name: ghcr.io/ironvisor/ironvisor-console
    newName: $registry/ironvisor-console
    digest: ${digest[console]}
YAML
{
  echo "# Ironvisor $version ($IRONVISOR_COMMIT): kubectl apply --server-side -f install.yaml"
  kubectl kustomize "$overlay"
} > "$dist/install.yaml"
{
  echo "# Ironvisor $version ($IRONVISOR_COMMIT): the CustomResourceDefinitions"
  kubectl kustomize manifests/crds
} > "$dist/crds.yaml"

step "ivctl"
install -m 0755 "$bin/ivctl" "$dist/ivctl"
strip --strip-debug "$dist/ivctl"

step "SBOM"
cargo metadata --format-version 1 --locked --filter-platform x86_64-unknown-linux-gnu > "$work/metadata.json"
"$tool" sbom --metadata "$work/metadata.json" \
  --root ironvisor-agent --root ironvisor-operator --root ironvisor-console --root ivctl \
  --image "ironvisor-agent=hack/release/packages/agent.lock" \
  --image "ironvisor-operator=hack/release/packages/operator.lock" \
  --image "ironvisor-console=hack/release/packages/operator.lock" \
  --version "$version" --commit "$IRONVISOR_COMMIT" --created "$SOURCE_DATE_EPOCH" \
  --out "$dist/sbom.cdx.json"

step "SHA256SUMS"
(cd "$dist" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort |
  xargs sha256sum > SHA256SUMS)
cat "$dist/SHA256SUMS"
echo "release: built in $(( $(date +%s) - started )) s"

if [ "$verify" -eq 1 ]; then
  hack/release/verify.sh "$dist"
fi
