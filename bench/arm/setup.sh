#!/usr/bin/env bash
# What `make bench-arm` counts with, built once into $EDGE_ARM_CACHE (default /var/cache/edge-arm):
#
#   - libinsn.so, QEMU's instruction-counting TCG plugin, compiled from Debian's qemu source
#     package (the version of the host's qemu-user, so the plugin API matches);
#   - root/, a debootstrapped Debian bookworm arm64 root (tests/targets/debian-root.sh) with
#     /opt/edge-venv: Python 3.11, numpy 1.x, PyYAML, ai-edge-litert and tflite-runtime, the
#     wheels a Raspberry Pi OS bookworm 64-bit installs (requirements.txt);
#   - root/proc/cpuinfo, a Raspberry Pi 4's: qemu-user's -L serves it in place of the host's
#     x86 one, on which ai-edge-litert crashes.
#
# Root only (apt-get, debootstrap, chroot). Counting itself (bench/arm.py) runs Debian's dynamic
# qemu-aarch64, which loads plugins (qemu-aarch64-static cannot).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
cache=${EDGE_ARM_CACHE:-/var/cache/edge-arm}
say() { echo "bench-arm setup: $*" >&2; }
[ "$(id -u)" = 0 ] || { say "must run as root (apt-get, debootstrap, chroot)"; exit 2; }
mkdir -p "$cache"

apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; }
missing=""
for p in qemu-user qemu-user-static binfmt-support debootstrap libglib2.0-dev dpkg-dev gcc pkg-config xz-utils; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing$missing"
    apt_get update -qq && apt_get install -y -qq $missing >/dev/null
fi

# The plugin, from the source of the qemu-user that runs it.
if [ ! -e "$cache/libinsn.so" ]; then
    src_list=/etc/apt/sources.list.d/edge-arm-deb-src.sources
    if ! apt-get source --print-uris qemu >/dev/null 2>&1; then
        say "adding Debian's deb-src lines ($src_list)"
        . /etc/os-release
        printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://deb.debian.org/debian-security\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$VERSION_CODENAME" "$VERSION_CODENAME" "$VERSION_CODENAME" > "$src_list"
        apt_get update -qq
    fi
    version=$(dpkg-query -W -f '${source:Version}' qemu-user)
    rm -rf "$cache/qemu-src.tmp" && mkdir -p "$cache/qemu-src.tmp"
    say "downloading qemu $version source"
    (cd "$cache/qemu-src.tmp" && apt-get source --download-only -qq "qemu=$version" >/dev/null)
    orig=$(ls "$cache"/qemu-src.tmp/qemu_*.orig.tar.* | head -1)
    tar -xf "$orig" -C "$cache/qemu-src.tmp" --wildcards '*/tests/plugin/insn.c' '*/include/qemu/qemu-plugin.h'
    top=$(ls -d "$cache"/qemu-src.tmp/qemu-*/ | head -1)
    gcc -shared -fPIC -O2 -I "$top/include/qemu" $(pkg-config --cflags glib-2.0) \
        "$top/tests/plugin/insn.c" -o "$cache/libinsn.so.tmp"
    mv "$cache/libinsn.so.tmp" "$cache/libinsn.so"
    rm -rf "$cache/qemu-src.tmp"
fi

root="$cache/root"
if [ ! -e "$root/opt/edge-venv/.complete" ]; then
    bash "$REPO/tests/targets/debian-root.sh" bookworm arm64 "$root.tmp" >/dev/null
    cp "$REPO/tests/targets/cpuinfo-pi4-arm64.txt" "$root.tmp/proc/cpuinfo"
    mount -t proc proc "$root.tmp/proc"
    trap 'umount "$root.tmp/proc" 2>/dev/null || true' EXIT
    say "installing python3-venv and the device's wheels in the arm64 root (under emulation: minutes)"
    chroot "$root.tmp" sh -c 'DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null'
    chroot "$root.tmp" python3 -m venv /opt/edge-venv
    chroot "$root.tmp" /opt/edge-venv/bin/pip install -q "numpy>=1.23,<2" "PyYAML>=6.0" \
        tflite-runtime==2.14.0 ai-edge-litert==2.3.0
    umount "$root.tmp/proc"; trap - EXIT
    touch "$root.tmp/opt/edge-venv/.complete"
    rm -rf "$root" && mv "$root.tmp" "$root"
fi
echo "$cache"
