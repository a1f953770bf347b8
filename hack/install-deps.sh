#!/usr/bin/env bash
# Installs, idempotently, every system package Ironvisor's build, tests and demo need on
# Debian 12. Safe to run again: it only calls apt-get when something is missing.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E "$0" "$@"
fi

# libvirt and QEMU first: on machines that carry a newer qemu-utils from backports, asking for
# qemu-utils in the same transaction makes apt refuse ("held broken packages").
group_virt=(libvirt-dev libvirt-daemon-system libvirt-clients qemu-system-x86 pkg-config)
# swtpm: the emulated TPM 2.0 of VMs with spec.tpm (libvirt starts one per guest and lists the
# emulator backend in its domain capabilities only when swtpm is there); swtpm-tools has
# swtpm_setup, which libvirt runs to manufacture a new TPM's state.
group_tpm=(swtpm swtpm-tools)
# iptables: the agent's host guard (agent/src/host_guard.rs); libvirt's nwfilter uses it too.
group_net=(iptables)
# tini: a subreaper for the libvirtd daemons (hack/start-libvirtd.sh, hack/private-libvirtd.sh)
# that reaps their exited QEMUs at once, as systemd does on a real host.
group_tools=(tini qemu-utils cpio busybox-static genisoimage dosfstools mtools jq curl ca-certificates
             prometheus python3 python3-venv iproute2 procps psmisc lua5.1 lua-cjson kmod e2fsprogs)
# Release images (hack/release.sh, tests/tests/release.rs): skopeo reads and pushes OCI
# archives, umoci unpacks them into a root filesystem, strip (binutils) drops debug info.
group_release=(skopeo umoci binutils)
# The browser console (console/web, hack/web-assets.sh): npm installs noVNC and xterm.js from
# the lock file; its test drives Debian's chromium headless and reads the screen with tesseract.
group_web=(chromium tesseract-ocr tesseract-ocr-eng)

missing() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
  done
}

updated=0
install() {
  local todo
  todo=$(missing "$@")
  [ -z "$todo" ] && return 0
  if [ "$updated" -eq 0 ]; then
    echo "install-deps: apt-get update"
    apt-get update -qq
    updated=1
  fi
  echo "install-deps: installing" $todo
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $todo >/dev/null
}

install "${group_virt[@]}"
install "${group_tpm[@]}"
install "${group_net[@]}"
install "${group_tools[@]}"
install "${group_release[@]}"
install "${group_web[@]}"
# npm: Debian's nodejs and npm unless a node with npm is already there.
if ! command -v npm >/dev/null 2>&1; then
  install nodejs npm
fi

# kubectl: the machines ship v1.32 in /usr/bin; Debian's kubernetes-client is the fallback.
if ! command -v kubectl >/dev/null 2>&1; then
  install kubernetes-client
fi

# The Debian packaging starts a Prometheus server on :9090; the tests run their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi


# kubernetes-validate (PyPI): validates rendered manifests against the official Kubernetes
# OpenAPI schemas, offline (the schemas ship inside the package).
KV_VENV=/opt/ironvisor-venv
KV_VERSION=1.37.0
if ! "$KV_VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KV_VERSION"; then
  echo "install-deps: kubernetes-validate $KV_VERSION into $KV_VENV"
  python3 -m venv "$KV_VENV"
  "$KV_VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
fi

echo "install-deps: everything present"
