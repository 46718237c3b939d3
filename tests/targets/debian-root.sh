#!/usr/bin/env bash
# A fresh Debian root to run the README's commands in, as a new user of that OS would.
#
#   tests/targets/debian-root.sh SUITE ARCH DEST
#
# Builds (once) a debootstrapped base for SUITE/ARCH in $EDGE_ROOTS_CACHE (default
# /var/tmp/edge-roots), then copies it to DEST. Foreign architectures run under
# qemu-user-static through binfmt_misc. The host's CA certificates and pip settings are
# copied in: downloads here go through a proxy with its own CA. Root only.
set -euo pipefail
suite=${1:?suite (trixie, bookworm)} arch=${2:?arch (amd64, arm64, armhf)} dest=${3:?destination}
cache=${EDGE_ROOTS_CACHE:-/var/tmp/edge-roots}
base="$cache/$suite-$arch"
# What the README's commands assume a Raspberry Pi OS image has, plus systemd as PID 1.
include=ca-certificates,make,git,sudo,systemd,systemd-sysv,dbus,python3,procps

# A tool missing on a fresh machine (CI's included) is installed, as tests/system/run.sh does.
need() {
  command -v "$1" >/dev/null 2>&1 && return
  echo "debian-root: installing $2 (for '$1')" >&2
  # shellcheck disable=SC2086 # $2 is a list of packages
  { apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get -o DPkg::Lock::Timeout=600 install -y -qq $2 >/dev/null; } || true
  command -v "$1" >/dev/null 2>&1 || { echo "debian-root: '$1' is missing (apt-get install $2)" >&2; exit 2; }
}
[ "$(id -u)" = 0 ] || { echo "debian-root: must run as root (debootstrap, chroot)" >&2; exit 2; }
need debootstrap debootstrap

if [ "$arch" != "$(dpkg --print-architecture)" ]; then
  need qemu-aarch64-static "qemu-user-static binfmt-support"
  [ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || [ -e /proc/sys/fs/binfmt_misc/status ]
  update-binfmts --enable >/dev/null 2>&1 || true
fi

if [ ! -e "$base/.complete" ]; then
  mkdir -p "$cache"
  rm -rf "$base.tmp"
  echo "debian-root: debootstrap $suite $arch (once, cached in $base)" >&2
  debootstrap --variant=minbase --arch="$arch" --include="$include" "$suite" "$base.tmp" \
    http://deb.debian.org/debian >"$cache/$suite-$arch.log" 2>&1 \
    || { echo "debian-root: debootstrap failed, see $cache/$suite-$arch.log" >&2; exit 1; }
  rm -rf "$base"
  mv "$base.tmp" "$base"
  touch "$base/.complete"
fi

rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
cp -a "$base" "$dest"
rm -f "$dest/.complete"

# The proxy's CA, for apt and pip inside the root.
if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
  mkdir -p "$dest/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/* "$dest/usr/local/share/ca-certificates/"
  chroot "$dest" update-ca-certificates >/dev/null 2>&1
fi
# pip settings that name local mirrors of this host only would break pip inside the root:
# take the certificate and timeout, nothing that points at the host's own folders.
mkdir -p "$dest/etc"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\ndefault-timeout = 180\n' > "$dest/etc/pip.conf"
cp /etc/resolv.conf "$dest/etc/resolv.conf" 2>/dev/null || true
echo "$dest"
