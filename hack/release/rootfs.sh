#!/usr/bin/env bash
# Assembles an image's root filesystem from the Debian packages its lock file pins and one
# release binary, with no package manager in it and no maintainer script run:
#
#   hack/release/rootfs.sh IMAGE LOCKFILE BINARY DEB_CACHE OUT_DIR
#
# Each .deb is downloaded at exactly the pinned version (apt verifies it against Debian's
# signed indexes) into DEB_CACHE, checked against the SHA-256 in the lock file, and unpacked
# with dpkg-deb -x. Its control record goes to /var/lib/dpkg/status.d/<name> (the layout
# image scanners read). Documentation other than copyright files is left out.
set -euo pipefail

# The modes of what this script makes (and of directories dpkg-deb creates implicitly) go
# into the image: the same whatever the caller's umask.
umask 022
[ $# -eq 5 ] || { echo "usage: $0 IMAGE LOCKFILE BINARY DEB_CACHE OUT_DIR" >&2; exit 2; }
image="$1" lock="$2" binary="$3" cache="$4" out="$5"

mkdir -p "$cache"
rm -rf "$out"
mkdir -p "$out"

deb_file() { # name version arch -> the file name apt-get download gives
  local version="${2/:/%3a}"
  echo "$cache/${1}_${version}_${3}.deb"
}

download() { # name version -> the .deb in the cache, as apt-get download names it
  (cd "$cache" && apt-get download -qq -o APT::Sandbox::User=root "$1=$2" >/dev/null)
}
updated=0
update_once() { [ "$updated" -eq 0 ] && updated=1 && apt-get update -qq; }

grep -v '^[[:space:]]*#' "$lock" | while read -r name version arch sha256; do
  [ -n "$name" ] || continue
  file="$(deb_file "$name" "$version" "$arch")"
  if ! echo "$sha256  $file" | sha256sum -c --status 2>/dev/null; then
    rm -f "$file"
    # A new machine's package indexes may be missing or older than the pins: update once, retry.
    if ! download "$name" "$version" && ! { update_once && download "$name" "$version"; }; then
      echo "rootfs: cannot download $name $version: if Debian no longer serves it, run" \
           "hack/release/pin-packages.sh and commit the new pins" >&2
      exit 1
    fi
    echo "$sha256  $file" | sha256sum -c --status || {
      echo "rootfs: $file does not have the pinned SHA-256 $sha256" >&2; exit 1; }
  fi
  dpkg-deb -x "$file" "$out"
  mkdir -p "$out/var/lib/dpkg/status.d"
  { dpkg-deb -f "$file"; echo "Status: install ok installed"; } > "$out/var/lib/dpkg/status.d/$name"
done

# Documentation, manuals and translations are not needed to run; copyright files stay.
find "$out/usr/share/doc" -mindepth 1 \( -type f -o -type l \) ! -name copyright -delete 2>/dev/null || true
find "$out/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$out/usr/share/man" "$out/usr/share/info" "$out/usr/share/locale" \
       "$out/usr/share/lintian" "$out/usr/share/bug"

# What base-files and the maintainer scripts would have made, and no more.
mkdir -p "$out/etc" "$out/run" "$out/tmp" "$out/var/lib" "$out/usr/local/bin"
chmod 1777 "$out/tmp"
ln -sfn ../run "$out/var/run"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin\n' > "$out/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$out/etc/group"
if [ -d "$out/usr/share/ca-certificates/mozilla" ]; then
  # update-ca-certificates' bundle: every certificate of the package, in name order.
  mkdir -p "$out/etc/ssl/certs"
  LC_ALL=C find "$out/usr/share/ca-certificates/mozilla" -name '*.crt' | LC_ALL=C sort |
    xargs cat > "$out/etc/ssl/certs/ca-certificates.crt"
fi
if [ -e "$out/usr/sbin/xtables-nft-multi" ]; then
  # update-alternatives' default: the nf_tables backend, as on a Debian 12 host.
  for tool in iptables ip6tables; do
    for suffix in "" -save -restore; do
      ln -sfn "$tool-nft$suffix" "$out/usr/sbin/$tool$suffix"
    done
  done
fi

# Without the line tables of the release profile (a sixth of the size); symbols stay, so a
# backtrace still names functions. GNU strip is deterministic.
install -m 0755 "$binary" "$out/usr/local/bin/$(basename "$binary")"
strip --strip-debug "$out/usr/local/bin/$(basename "$binary")"
echo "rootfs: $image: $(du -sh "$out" | cut -f1) in $out"
