#!/usr/bin/env bash
# The virtual Pi's card image: Debian bookworm (amd64 or arm64) with Debian's own kernel, the recorder
# installed by `make install` from the committed HEAD with the unit enabled, and the test
# hardware (snd-aloop, gpio-sim built out of tree). A test fixture, not a product.
#
#   tests/vm/image.sh OUT_DIR [ARCH]   writes OUT_DIR/{card.img,vmlinuz,initrd.img,kernel.txt}
#
# ARCH: amd64 (default) or arm64, which is built under qemu-user (binfmt) and boots under
# qemu-system-aarch64 -M virt.
#
# Debian packages and PyPI only. apt and pip downloads are kept in $EDGE_VM_CACHE/{apt,pip}
# (default /var/cache/edge-vm). Root only.
set -euo pipefail
out=${1:?output directory}
arch=${2:-amd64}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${EDGE_VM_CACHE:-/var/cache/edge-vm}
suite=bookworm
# The image's size is only its file system's: the file is sparse.
size=3G
# The test's kit inside the guest (snd-aloop's player, configfs for gpio-sim, the kbuild of
# gpio-sim and the initramfs's tools); the recorder's own packages come from `make install`.
packages=(linux-image-$arch linux-headers-$arch linux-source-6.1 busybox-static cpio kmod udev
          alsa-utils gcc make xz-utils libc6-dev)

work=$(mktemp -d /var/tmp/edge-vm-image.XXXXXX)
root=$work/root
say() { echo "vm-image: $*" >&2; }
# Nothing of the host's is mounted in the root but the two download caches (no /dev: the
# root has debootstrap's own device nodes; a fresh proc), and the tree is removed only once
# nothing is mounted below it any more.
unmount_all() {
    local mount_point
    grep -o " $work/[^ ]*" /proc/mounts | sort -r | while read -r mount_point; do
        umount "$mount_point" || umount -l "$mount_point"
    done
}
cleanup() {
    set +e
    unmount_all
    if grep -q " $work/" /proc/mounts; then
        say "still mounted below $work: not removing it"
    else
        rm -rf --one-file-system "$work"
    fi
}
trap cleanup EXIT
bind() { mkdir -p "$2"; mount --bind "$1" "$2"; }
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"; }

"$repo/tests/targets/debian-root.sh" "$suite" "$arch" "$root" >/dev/null
mkdir -p "$cache/apt" "$cache/pip"
mount -t proc proc "$root/proc"
# Under qemu-user, ai-edge-litert crashes on the host's x86 /proc/cpuinfo: show it a Pi 4's.
[ "$arch" = "$(dpkg --print-architecture)" ] || mount --bind "$repo/tests/targets/cpuinfo-pi4-arm64.txt" "$root/proc/cpuinfo"
bind "$cache/apt" "$root/var/cache/apt/archives"; bind "$cache/pip" "$root/root/.cache/pip"

say "Debian packages: ${packages[*]}"
in_root apt-get -o DPkg::Lock::Timeout=600 update -qq
in_root apt-get install -y -qq --no-install-recommends "${packages[@]}" >"$work/apt.log" 2>&1 \
    || { tail -n 30 "$work/apt.log" >&2; exit 1; }
kernel=$(basename "$(ls -d "$root"/lib/modules/*)")
say "kernel $kernel; building gpio-sim"
src=$root/usr/src/gpio-sim
mkdir -p "$src"
tar -xJf "$root"/usr/src/linux-source-6.1.tar.xz -C "$src" --strip-components=3 --wildcards \
    '*/drivers/gpio/gpio-sim.c' '*/drivers/gpio/gpiolib.h'
tar -xJf "$root"/usr/src/linux-source-6.1.tar.xz -C "$src" --strip-components=3 --wildcards '*/kernel/irq/irq_sim.c'
mv "$src/gpio-sim.c" "$src/gpio-sim-main.c"
# The one symbol irq_sim.c uses that Debian's kernel does not export to modules.
sed -i 's/handle_simple_irq(irq_to_desc(\([^)]*\)))/generic_handle_irq_safe(\1)/' "$src/irq_sim.c"
grep -q generic_handle_irq_safe "$src/irq_sim.c" || { say "irq_sim.c: the patched call is not there"; exit 1; }
cp "$here/gpio-sim.Kbuild" "$src/Kbuild"
in_root make -s -C "/lib/modules/$kernel/build" M=/usr/src/gpio-sim modules >"$work/kbuild.log" 2>&1 \
    || { tail -n 30 "$work/kbuild.log" >&2; exit 1; }
install -D -m 0644 "$src/gpio-sim.ko" "$root/lib/modules/$kernel/updates/gpio-sim.ko"
in_root depmod -a "$kernel"
rm -rf "$src" "$root"/usr/src/linux-source-6.1.tar.xz

say "initramfs"
initramfs=$root/tmp/initramfs
mkdir -p "$initramfs/bin" "$initramfs/modules"
cp "$root/bin/busybox" "$initramfs/bin/busybox"
install -m 0755 "$here/init" "$initramfs/init"
# virtio_console: arm64's report port (/dev/hvc0), there before the check starts.
for module in virtio_pci virtio_blk virtio_console crc32c_generic ext4; do
    in_root modprobe -S "$kernel" --show-depends "$module"
done | awk '$1 == "insmod" && !seen[$2]++ {print $2}' >"$work/modules.txt"
while read -r module; do
    name=$(basename "$module")
    case "$name" in
        *.xz) xz -dc "$root$module" >"$initramfs/modules/${name%.xz}"; name=${name%.xz} ;;
        *) cp "$root$module" "$initramfs/modules/$name" ;;
    esac
    echo "$name" >>"$initramfs/modules/order"
done <"$work/modules.txt"
in_root sh -c 'cd /tmp/initramfs && find . | cpio -o -H newc --quiet | gzip -1' >"$work/initrd.img"
rm -rf "$initramfs"

say "the recorder: make install of $(git -C "$repo" log -1 --format='%h %s')"
git clone --quiet --no-checkout "$repo" "$root/root/edge-recorder"
git -C "$root/root/edge-recorder" checkout --quiet --detach "$(git -C "$repo" rev-parse HEAD)"
# The test's config is in place first: `make install` keeps an edited config, as on a Pi.
install -D -m 0640 "$here/edge.yaml" "$root/etc/edge-recorder/edge.yaml"
in_root sh -c 'cd /root/edge-recorder && make install' >"$work/install.log" 2>&1 \
    || { tail -n 30 "$work/install.log" >&2; exit 1; }
grep -q 'enabled' "$work/install.log" || { tail -n 5 "$work/install.log" >&2; exit 1; }
# gpiozero's pin library: python3-lgpio on Raspberry Pi OS, from PyPI here (>= 0.2: 0.0.0.2 is
# an empty placeholder).
in_root /opt/edge-recorder/venv/bin/pip install -q 'lgpio>=0.2'

say "the test's units"
install -D -m 0755 "$here/hw.sh" "$root/usr/local/lib/edge-vm/hw.sh"
install -D -m 0644 "$repo/tests/targets/cpuinfo-pi4-arm64.txt" "$root/usr/local/lib/edge-vm/cpuinfo"
install -m 0644 "$here/edge-vm-hw.service" "$here/edge-vm-check.service" "$root/etc/systemd/system/"
install -D -m 0644 "$here/recorder-pi.conf" "$root/etc/systemd/system/edge-recorder.service.d/pi.conf"
in_root systemctl enable edge-vm-hw.service edge-vm-check.service >/dev/null 2>&1
# A serial console that nothing reads must not hold the boot; no network at all.
in_root systemctl mask serial-getty@ttyS0.service serial-getty@ttyS1.service getty@tty1.service \
    systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    fstrim.timer man-db.timer >/dev/null 2>&1
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$root/etc/fstab"
echo edge-vm >"$root/etc/hostname"
in_root passwd -d root >/dev/null
in_root apt-get clean

say "card image"
unmount_all
grep -q " $work/" /proc/mounts && { say "cannot unmount what is below $work"; exit 1; }
mkdir -p "$out"
rm -f "$out/card.img"
cp "$root/boot/vmlinuz-$kernel" "$out/vmlinuz"
mv "$work/initrd.img" "$out/initrd.img"
mkfs.ext4 -q -L edge-card -d "$root" "$out/card.img" "$size"
echo "$kernel" >"$out/kernel.txt"
say "done: $out"
