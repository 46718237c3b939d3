#!/usr/bin/env bash
# Remove edge-recorder: `sudo make uninstall`. Safe to run again.
#
# Removed: the service, /opt/edge-recorder (code and venv), /etc/edge-recorder (including
# an edited edge.yaml), the udev rules, the USB export unit and the network sync units. Kept: the recordings under /var/lib/edge-recorder
# and the edge-recorder user that owns them, so a later install can read them again.
#
# EDGE_ROOT=/some/dir works inside that directory and skips systemctl and udev.
set -euo pipefail

ROOT="${EDGE_ROOT:-}"
UNIT=edge-recorder.service
UNIT_FILE="$ROOT/etc/systemd/system/$UNIT"
UDEV_RULE="$ROOT/etc/udev/rules.d/60-edge-recorder-gpiochip.rules"
EXPORT_RULE="$ROOT/etc/udev/rules.d/99-edge-export.rules"
EXPORT_UNIT="$ROOT/etc/systemd/system/edge-export@.service"
SYNC_UNITS=("$ROOT/etc/systemd/system/edge-sync.service" "$ROOT/etc/systemd/system/edge-sync.timer")
STATE_DIR="$ROOT/var/lib/edge-recorder"

say() { echo "uninstall: $*"; }
die() { echo "uninstall: $*" >&2; exit 1; }

live_system() { [ -z "$ROOT" ]; }

if live_system; then
    [ "$(id -u)" = 0 ] || die "must run as root (sudo make uninstall)"
    if [ -e "$UNIT_FILE" ]; then
        if [ -d /run/systemd/system ]; then
            # Stopping lets the daemon finish and fsync the open segment first.
            systemctl disable --now "$UNIT"
            if [ -e "${SYNC_UNITS[1]}" ]; then systemctl disable --now edge-sync.timer; fi
        else
            systemctl disable "$UNIT" >/dev/null 2>&1 || say "could not disable $UNIT offline; removing it anyway"
        fi
    fi
fi

rm -f "$UNIT_FILE" "$UDEV_RULE" "$EXPORT_RULE" "$EXPORT_UNIT" "${SYNC_UNITS[@]}" "$ROOT/usr/local/bin/edge"
rm -rf "$ROOT/opt/edge-recorder" "$ROOT/etc/edge-recorder"

if live_system; then
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl reset-failed "$UNIT" 2>/dev/null || true
    fi
    if [ -S /run/udev/control ]; then udevadm control --reload; fi
fi

say "removed the service, /opt/edge-recorder and /etc/edge-recorder"
if [ -d "$STATE_DIR" ]; then
    say "kept the recordings in $STATE_DIR (and the edge-recorder user that owns them)"
fi
