#!/usr/bin/env bash
# Install edge-recorder as a systemd service: `sudo make install` on the Pi.
#
# Running it again upgrades in place and changes nothing else: an edited
# /etc/edge-recorder/edge.yaml is kept (the new default lands beside it as edge.yaml.dist)
# and recordings under /var/lib/edge-recorder are never touched.
#
# EDGE_ROOT=/some/dir installs into that directory instead of / and skips everything that
# changes the running system (apt, users, udev, systemctl), for tests. The venv it makes
# there names the prefixed paths, so it cannot be moved: build images in a chroot instead.
# EDGE_SKIP_VENV=1 skips creating the venv and the pip installs.
set -euo pipefail

ROOT="${EDGE_ROOT:-}"
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
SERVICE_USER=edge-recorder
UNIT=edge-recorder.service
OPT="$ROOT/opt/edge-recorder"
CONFIG_DIR="$ROOT/etc/edge-recorder"
STATE_DIR="$ROOT/var/lib/edge-recorder"
LEGACY_STATUS=/var/lib/edge-recorder/status.json
UNIT_DIR="$ROOT/etc/systemd/system"
UDEV_RULE="$ROOT/etc/udev/rules.d/60-edge-recorder-gpiochip.rules"
DEB_PACKAGES=(portaudio19-dev python3-venv python3-dev gcc libc6-dev alsa-utils age)
# Plus what edge/target.py names for this machine: lgpio, gpiozero's backend for
# /dev/gpiochip*, from Raspberry Pi OS (python3-lgpio); numpy and PyYAML on 32-bit ARM.

say() { echo "install: $*"; }
die() { echo "install: $*" >&2; exit 1; }

live_system() { [ -z "$ROOT" ]; }
systemd_running() { [ -d /run/systemd/system ]; }

for required in edge models config/edge.yaml pyproject.toml requirements.txt systemd/$UNIT; do
    [ -e "$SOURCE/$required" ] || die "$SOURCE/$required is missing: run from a complete checkout"
done
if live_system; then
    [ "$(id -u)" = 0 ] || die "must run as root (sudo make install)"
fi

install_debian_packages() {
    local packages=("${DEB_PACKAGES[@]}") missing=()
    # shellcheck disable=SC2207 # space-separated package names
    packages+=($("$PYTHON" "$SOURCE/edge/target.py" debian-packages))
    for package in "${packages[@]}"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

create_service_user() {
    # Raspberry Pi OS has a gpio group owning /dev/gpiochip*; plain Debian gets it here and
    # from the udev rule below.
    getent group gpio >/dev/null || groupadd --system gpio
    if id "$SERVICE_USER" >/dev/null 2>&1; then
        usermod --append --groups audio,gpio "$SERVICE_USER"
    else
        useradd --system --user-group --groups audio,gpio --home-dir /var/lib/edge-recorder \
            --no-create-home --shell /usr/sbin/nologin --comment "edge-recorder daemon" "$SERVICE_USER"
        say "created system user $SERVICE_USER"
    fi
}

copy_source() {
    # A fresh copy each time, so files removed upstream do not linger; swapped in whole.
    local fresh="$OPT/src.new" item
    local items=(edge models config pyproject.toml requirements.txt)
    [ -e "$SOURCE/README.md" ] && items+=(README.md)
    [ -e "$SOURCE/docs" ] && items+=(docs)
    rm -rf "$fresh"
    mkdir -p "$fresh"
    tar -C "$SOURCE" --exclude=__pycache__ --exclude='*.pyc' -cf - "${items[@]}" \
        | tar -C "$fresh" --no-same-owner --no-same-permissions -xf -
    chmod -R u+rwX,go+rX,go-w "$fresh"
    rm -rf "$OPT/src"
    mv "$fresh" "$OPT/src"
    for item in "${items[@]}"; do [ -e "$OPT/src/$item" ] || die "copying $item failed"; done
}

install_venv() {
    local venv="$OPT/venv"
    # shellcheck disable=SC2046 # no option or one
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv $("$PYTHON" "$SOURCE/edge/target.py" venv-options) "$venv"
    "$venv/bin/pip" install -q -r "$OPT/src/requirements.txt"
    # Editable on purpose: the default model and config are found relative to the package
    # (edge.config.PACKAGE_ROOT), so edge/ must stay next to models/ and config/ in src/.
    "$venv/bin/pip" install -q --no-deps -e "$OPT/src"
    # The service cannot write __pycache__ (ProtectSystem=strict): compile once now.
    "$venv/bin/python" -m compileall -q "$OPT/src/edge"
    [ -x "$venv/bin/edge" ] || die "$venv/bin/edge was not created"
    # `edge status`, `edge export` and the rest from any shell.
    mkdir -p "$ROOT/usr/local/bin"
    ln -sfn /opt/edge-recorder/venv/bin/edge "$ROOT/usr/local/bin/edge"
}

install_config() {
    local default config="$CONFIG_DIR/edge.yaml"
    default=$(mktemp)
    # The bundled default with the service's data paths written out, so that `edge status`
    # or `edge export` run from a shell (no $STATE_DIRECTORY there) find the same files.
    sed -e 's#^  recordings_dir: recordings #  recordings_dir: /var/lib/edge-recorder/recordings #' \
        -e 's#^  status_file: status.json #  status_file: /run/edge-recorder/status.json #' \
        -e 's#^  control_socket: control.sock #  control_socket: /run/edge-recorder/control.sock #' \
        -e 's#^  rclone_config: rclone.conf #  rclone_config: /var/lib/edge-recorder/rclone.conf #' \
        "$OPT/src/config/edge.yaml" >"$default"
    mkdir -p "$CONFIG_DIR"
    # Earlier installs wrote the status to the card every 5 s: move the line they wrote to
    # the service's RuntimeDirectory (a tmpfs), in place; an edited path is left alone.
    if [ -e "$config" ] && grep -q "^  status_file: $LEGACY_STATUS #" "$config"; then
        sed -i "s#^  status_file: $LEGACY_STATUS #  status_file: /run/edge-recorder/status.json #" "$config"
        say "$config: the status file moves off the SD card to /run/edge-recorder/status.json"
    fi
    if [ ! -e "$config" ]; then
        install -m 0640 "$default" "$config"
        say "installed default config $config"
    elif cmp -s "$default" "$config"; then
        rm -f "$config.dist"
    else
        install -m 0640 "$default" "$config.dist"
        say "kept your $config; the new default is beside it as edge.yaml.dist"
    fi
    rm -f "$default"
    # root:edge-recorder 0750/0640: readable by the service and by people in its group (edge
    # status without sudo), writable only by root.
    if live_system; then
        chgrp "$SERVICE_USER" "$CONFIG_DIR" "$CONFIG_DIR"/edge.yaml*
        chmod 0750 "$CONFIG_DIR"
    fi
}

create_state_dir() {
    # systemd creates it too (StateDirectory=), but only once the service starts. The
    # recordings in it stay private (0700); the status is in /run/edge-recorder.
    mkdir -p "$STATE_DIR"
    chmod 0750 "$STATE_DIR"
    if live_system; then chown "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"; fi
}

install_unit_and_rule() {
    mkdir -p "$UNIT_DIR" "$(dirname "$UDEV_RULE")"
    install -m 0644 "$SOURCE/systemd/$UNIT" "$UNIT_DIR/$UNIT"
    printf '%s\n' '# edge-recorder: let the gpio group drive GPIO lines (Raspberry Pi OS does the same).' \
        'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"' >"$UDEV_RULE"
    chmod 0644 "$UDEV_RULE"
    if live_system && [ -S /run/udev/control ]; then
        udevadm control --reload
        udevadm trigger --subsystem-match=gpio
    fi
}

install_export_units() {
    # The USB-stick export is opt-in (export.auto): without it no udev rule reacts to sticks.
    local rule="$ROOT/etc/udev/rules.d/99-edge-export.rules" unit="$UNIT_DIR/edge-export@.service"
    local settings python="$OPT/venv/bin/python"
    # Without the venv (EDGE_SKIP_VENV=1) the Python running the installer reads the config.
    [ -x "$python" ] || python="$PYTHON"
    settings=$(PYTHONPATH="$OPT/src" "$python" -c 'import sys; from edge.config import load_config
s = load_config(sys.argv[1]).export; print(int(s.auto), s.usb_label)' "$CONFIG_DIR/edge.yaml") \
        || die "$CONFIG_DIR/edge.yaml: fix the config first (see the message above)"
    if [ "${settings%% *}" = 1 ]; then
        sed "s/EDGE-EXPORT/${settings#* }/" "$SOURCE/systemd/99-edge-export.rules" >"$rule"
        install -m 0644 "$SOURCE/systemd/edge-export@.service" "$unit"
        say "USB export enabled for sticks labelled ${settings#* }"
    else
        rm -f "$rule" "$unit"
    fi
    if live_system && [ -S /run/udev/control ]; then udevadm control --reload; fi
}

install_sync_units() {
    # The network copy is opt-in (sync.remote): without it no timer runs and no unit of
    # edge-recorder has network.
    local remote service="$UNIT_DIR/edge-sync.service" timer="$UNIT_DIR/edge-sync.timer"
    local python="$OPT/venv/bin/python"
    [ -x "$python" ] || python="$PYTHON"
    remote=$(PYTHONPATH="$OPT/src" "$python" -c 'import sys; from edge.config import load_config
print(load_config(sys.argv[1]).sync.remote or "")' "$CONFIG_DIR/edge.yaml") \
        || die "$CONFIG_DIR/edge.yaml: fix the config first (see the message above)"
    if [ -n "$remote" ]; then
        install -m 0644 "$SOURCE/systemd/edge-sync.service" "$service"
        install -m 0644 "$SOURCE/systemd/edge-sync.timer" "$timer"
        if live_system; then
            if ! dpkg -s rclone >/dev/null 2>&1; then
                say "installing Debian package: rclone"
                apt-get update -qq
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone
            fi
            if systemd_running; then
                systemctl daemon-reload
                systemctl enable --now edge-sync.timer
            else
                systemctl enable edge-sync.timer >/dev/null 2>&1 || true
            fi
        fi
        say "network copy to $remote every 15 minutes (edge-sync.timer; rclone config: sync.rclone_config)"
    elif [ -e "$timer" ]; then
        if live_system && systemd_running; then systemctl disable --now edge-sync.timer || true; fi
        rm -f "$service" "$timer"
        say "sync.remote is not set: removed edge-sync.timer"
    fi
}

start_service() {
    if systemd_running; then
        systemctl daemon-reload
        systemctl enable "$UNIT"
        # restart, not start: an upgrade must run the new code.
        systemctl restart "$UNIT"
        # What the recorder stopped by the restart published at the old place, now stale.
        if ! grep -q "^  status_file: $LEGACY_STATUS" "$CONFIG_DIR/edge.yaml"; then rm -f "$LEGACY_STATUS"; fi
        say "started $UNIT; follow it with: journalctl -u edge-recorder -f"
    else
        # enable works offline (chroot, image build): it only creates the symlink.
        if systemctl enable "$UNIT" >/dev/null 2>&1; then
            say "systemd is not running here: $UNIT is enabled and starts at the next boot"
        else
            say "systemd is not running here: enable $UNIT on the device with: systemctl enable --now $UNIT"
        fi
    fi
}

if [ "${EDGE_SKIP_VENV:-0}" != 1 ]; then
    "$PYTHON" "$SOURCE/edge/target.py" check || exit 1
fi
mkdir -p "$OPT"
if live_system; then
    install_debian_packages
    create_service_user
fi
copy_source
if [ "${EDGE_SKIP_VENV:-0}" = 1 ]; then
    say "EDGE_SKIP_VENV=1: not creating $OPT/venv"
else
    install_venv
fi
install_config
create_state_dir
install_unit_and_rule
install_export_units
install_sync_units
if live_system; then
    start_service
else
    say "installed into $ROOT (EDGE_ROOT set: no apt, users, udev or systemctl)"
fi
