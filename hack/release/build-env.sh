# Sourced by hack/release.sh: the environment of a reproducible release build.
# Two builds of one commit give the same binaries wherever the clone, the cargo home and the
# target directory are: every such path is remapped to a fixed one in the binaries (Rust and
# the C code of crates such as aws-lc-sys), the commit and its time are the only inputs that
# vary, and no incremental state is used.
# Needs: ROOT (the clone, physical path).

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ironvisor-target}"
export CARGO_INCREMENTAL=0
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"

IRONVISOR_COMMIT="$(git -C "$ROOT" rev-parse HEAD)"
export IRONVISOR_COMMIT
# The commit's own time: the images' creation time and every file's mtime in them.
SOURCE_DATE_EPOCH="$(git -C "$ROOT" log -1 --format=%ct HEAD)"
export SOURCE_DATE_EPOCH

remap=(
  "$ROOT=/build/ironvisor"
  "$cargo_home=/cargo"
  "$rustup_home=/rustup"
  "$CARGO_TARGET_DIR=/target"
)
RUSTFLAGS=""
CFLAGS=""
for m in "${remap[@]}"; do
  RUSTFLAGS+="--remap-path-prefix=$m "
  CFLAGS+="-ffile-prefix-map=$m "
done
export RUSTFLAGS="${RUSTFLAGS% }"
CFLAGS="${CFLAGS% }"
export CFLAGS CXXFLAGS="$CFLAGS"
# The release binaries: the three in the images and ivctl.
release_packages=(-p ironvisor-agent -p ironvisor-operator -p ironvisor-console -p ivctl)
