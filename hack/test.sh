#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what is missing, starts libvirtd,
# checks formatting and lints, then runs every test. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
hack/install-deps.sh

step "libvirtd"
hack/start-libvirtd.sh

# Build artefacts outside the clone, shared between runs and clones.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ironvisor-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Every clone builds the workspace's own crates once: incremental data would only fill the
# shared target directory (gigabytes per clone path).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step "browser console assets (npm ci)"
hack/web-assets.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
