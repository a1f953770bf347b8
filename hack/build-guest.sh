#!/usr/bin/env bash
# Builds the tiny test guest from Debian packages and caches it (default /var/tmp/ironvisor-guest,
# or $IRONVISOR_GUEST_DIR, or the first argument):
#   vmlinuz    the kernel of the package linux-image-amd64 depends on
#   initrd.gz  busybox-static + the modules to read a SATA CD-ROM with ISO 9660; its /init prints
#              IRONVISOR-GUEST-BOOTED on the serial console, mounts the CIDATA seed, prints the
#              user-data it found between IRONVISOR-USER-DATA-BEGIN/END, then powers off; with
#              `ironvisor.stay` on the kernel command line it prints IRONVISOR-GUEST-UP and stays
#              up instead (the demo's VMs), until the host destroys it. With `ironvisor.counter`
#              it then prints `IRONVISOR-TICK N` every few ms for ever (N counts up from 1
#              since boot: a live migration must continue it, a restart starts it again), and
#              with `ironvisor.diskwrite` it first writes `IRONVISOR-DISK-TOKEN-<uuid>` at the
#              start of /dev/vda, syncs, and prints the token. With
#              `ironvisor.burn` it keeps one vCPU busy (a shell loop, from before the stay/counter
#              step on; prints IRONVISOR-GUEST-BURNING), for right-sizing tests. With
#              `ironvisor.probe=HOST:PORT[,HOST:PORT...]` it first configures eth0 as QEMU's
#              user-mode network expects (10.0.2.15/24, gateway 10.0.2.2), tries a TCP connection
#              to each target and prints `IRONVISOR-PROBE HOST:PORT CONNECTED` or `... REFUSED`.
#              With `ironvisor.burn` alone (no stay, no counter) it prints IRONVISOR-BURNING and
#              burns for ever instead of powering off (a CPU burner for the rebalancing tests).
#              With `ironvisor.shell` (and `ironvisor.stay`) it clears the screen (tty0, the VNC
#              display) and prints IRONVISOR SCREEN READY there, and runs a shell on the serial
#              console (the consoles' tests).
#   root.qcow2 a 256 MiB qcow2 root disk (ext4, label ironvisor-root) for VMs that want an image
#              to overlay (manifests/examples/20-vm-disk-cloud-init.yaml).
# Needs: apt-get, dpkg, cpio, gzip, busybox-static, kmod (modinfo), e2fsprogs, qemu-utils — see
# hack/install-deps.sh.
set -euo pipefail

OUT="${1:-${IRONVISOR_GUEST_DIR:-/var/tmp/ironvisor-guest}}"
# Bump when the recipe changes, so cached guests are rebuilt.
RECIPE=9
if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$RECIPE" ] && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.gz" ] &&
  [ -s "$OUT/root.qcow2" ]; then
  echo "build-guest: cached in $OUT"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT"

kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$kpkg" ]; then
  apt-get update -qq
  kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
echo "build-guest: kernel package $kpkg"
(cd "$work" && apt-get download -qq "$kpkg")
dpkg -x "$work"/linux-image-*.deb "$work/k"
vmlinuz=$(ls "$work"/k/boot/vmlinuz-* | head -1)
moddir=$(ls -d "$work"/k/lib/modules/* | head -1)

# Modules in load order (dependencies first), found with modinfo.
order=()
add_module() {
  local m=$1 f dep
  for seen in "${order[@]:-}"; do [ "$seen" = "$m" ] && return 0; done
  f=$(find "$moddir" -name "$m.ko" -o -name "${m//_/-}.ko" | head -1)
  if [ -z "$f" ] && grep -qE "/(${m}|${m//_/-})\.ko$" "$moddir/modules.builtin" 2>/dev/null; then
    return 0 # built into the kernel
  fi
  [ -n "$f" ] || { echo "build-guest: module $m not found" >&2; exit 1; }
  for dep in $(modinfo -F depends "$f" | tr ',' ' '); do add_module "$dep"; done
  for seen in "${order[@]:-}"; do [ "$seen" = "$m" ] && return 0; done
  order+=("$m")
  cp "$f" "$work/root/lib/modules/$m.ko"
}

mkdir -p "$work/root"/{bin,dev,proc,sys,seed,lib/modules}
for m in ahci sr_mod isofs virtio_pci virtio_net virtio_blk; do add_module "$m"; done
printf '%s\n' "${order[@]}" > "$work/root/lib/modules/order"

cp /bin/busybox "$work/root/bin/busybox"
cat > "$work/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "IRONVISOR-GUEST-BOOTED"
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
probe=$(sed -n 's/.*ironvisor\.probe=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$probe" ]; then
  for _ in $(seq 1 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
  ip link set lo up
  ip link set eth0 up
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
  for target in $(echo "$probe" | tr ',' ' '); do
    if echo probe | nc -w 5 "${target%:*}" "${target##*:}" >/dev/null 2>&1; then
      echo "IRONVISOR-PROBE $target CONNECTED"
    else
      echo "IRONVISOR-PROBE $target REFUSED"
    fi
  done
fi
dev=""
for _ in $(seq 1 100); do
  for d in /dev/sr0 /dev/sr1; do [ -b "$d" ] && dev=$d; done
  [ -n "$dev" ] && break
  sleep 0.1
done
if [ -n "$dev" ] && mount -t iso9660 -o ro "$dev" /seed; then
  echo "IRONVISOR-SEED-MOUNTED $dev"
  echo "IRONVISOR-META-DATA: $(cat /seed/meta-data)"
  echo "IRONVISOR-USER-DATA-BEGIN"
  cat /seed/user-data
  echo "IRONVISOR-USER-DATA-END"
else
  echo "IRONVISOR-NO-SEED"
fi
if grep -qw ironvisor.diskwrite /proc/cmdline; then
  for _ in $(seq 1 100); do [ -b /dev/vda ] && break; sleep 0.1; done
  token="IRONVISOR-DISK-TOKEN-$(cat /proc/sys/kernel/random/uuid)"
  echo "$token" | dd of=/dev/vda conv=fsync 2>/dev/null && sync && echo "IRONVISOR-DISK-WROTE $token"
fi
if grep -qw ironvisor.burn /proc/cmdline; then
  (while :; do :; done) &
  echo "IRONVISOR-GUEST-BURNING"
fi
if grep -qw ironvisor.counter /proc/cmdline; then
  echo "IRONVISOR-GUEST-UP"
  i=0
  while :; do
    i=$((i + 1))
    echo "IRONVISOR-TICK $i"
    usleep 4000
  done
fi
if grep -qw ironvisor.burn /proc/cmdline; then
  # Neither stay nor counter: the burner is all the guest does (the rebalancing tests).
  echo "IRONVISOR-BURNING"
  wait
fi
if grep -qw ironvisor.shell /proc/cmdline; then
  # The consoles' tests: a marker on the screen (tty0, what the VNC display shows) and a
  # shell on the serial console that answers commands.
  printf '\033[2J\033[HIRONVISOR SCREEN READY\n' > /dev/tty0
  setsid sh -c 'exec sh -i </dev/ttyS0 >/dev/ttyS0 2>&1' &
fi
if grep -qw ironvisor.stay /proc/cmdline; then
  echo "IRONVISOR-GUEST-UP"
  while :; do sleep 3600; done
fi
echo "IRONVISOR-GUEST-POWEROFF"
sync
poweroff -f
INIT
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc --quiet | gzip -9) > "$work/initrd.gz"

mkdir -p "$work/rootfs/etc"
echo "ironvisor tiny guest root disk (recipe $RECIPE)" > "$work/rootfs/etc/ironvisor-root"
truncate -s 256M "$work/root.img"
mkfs.ext4 -q -F -L ironvisor-root -d "$work/rootfs" "$work/root.img"
qemu-img convert -q -f raw -O qcow2 "$work/root.img" "$work/root.qcow2"

cp "$vmlinuz" "$OUT/vmlinuz.tmp" && mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
mv "$work/initrd.gz" "$OUT/initrd.gz"
mv "$work/root.qcow2" "$OUT/root.qcow2"
echo "$RECIPE" > "$OUT/stamp"
echo "build-guest: built $OUT/vmlinuz, $OUT/initrd.gz (modules: ${order[*]}) and $OUT/root.qcow2"
