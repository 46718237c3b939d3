#!/usr/bin/env bash
# Inside the root booted by tests/system/cloud_init.sh: what the user-data promised, one
# PASS/FAIL line each. The expected values are read from the user-data example itself.
set -uo pipefail
example=/root/user-data.example
check() {  # check NAME COMMAND...: PASS when COMMAND succeeds, else FAIL with its output
    local name=$1 output
    shift
    if output=$("$@" 2>&1); then echo "PASS $name"; else echo "FAIL $name: $(echo "$output" | tail -n 5 | tr '\n' ' ')"; fi
}
# A key of the recorder's config as the user-data writes it (indented under write_files).
wanted() { grep -m1 -E "^ +$1:" "$example" | sed -E "s/^ +$1: *//; s/ +#.*//; s/^\"(.*)\"$/\\1/"; }

# Exit status 0 only when every module and every runcmd line succeeded (1: error, 2: "degraded").
check "cloud-init finished without errors" bash -c 'cloud-init status --long --wait'
check "the service is active" bash -c 'for _ in $(seq 120); do systemctl is-active --quiet edge-recorder && exit 0; sleep 1; done; systemctl status edge-recorder --no-pager'
check "the service is enabled for the next boot" systemctl is-enabled --quiet edge-recorder
check "the host name is the user-data's" bash -c "[ \"\$(hostname)\" = '$(grep -m1 '^hostname:' "$example" | awk '{print $2}')' ] || hostname"
settings=$(/opt/edge-recorder/venv/bin/python -c '
from edge.config import load_config, device_name
s = load_config("/etc/edge-recorder/edge.yaml")
print(device_name(s.storage)); print(",".join(s.privacy.recipients)); print(s.sync.remote); print(s.led.pin)' 2>&1)
check "the recorder loads the written config" test "$(wc -l <<<"$settings")" = 4 -a -x /opt/edge-recorder/venv/bin/edge
check "the device name is set" test "$(sed -n 1p <<<"$settings")" = "$(wanted device_name)"
check "the office's age key is the recipient" test "[$(sed -n 2p <<<"$settings")]" = "$(wanted recipients)"
check "the sync remote is set" test "$(sed -n 3p <<<"$settings")" = "$(wanted remote)"
check "the LED pin is set" test "$(sed -n 4p <<<"$settings")" = "$(wanted pin)"
check "the sync timer is enabled" systemctl is-enabled --quiet edge-sync.timer
check "rclone is installed for the sync" command -v rclone
check "the card's NAS key belongs to the service user" bash -c '[ "$(stat -c %U /var/lib/edge-recorder/nas_key)" = edge-recorder ] && [ -s /var/lib/edge-recorder/nas_key.pub ]'
check "rclone's config is private to the service user" bash -c '[ "$(stat -c %U:%a /var/lib/edge-recorder/rclone.conf)" = edge-recorder:600 ]'
check "edge status, as root, sees the daemon" bash -c 'edge status; edge status | grep -q "mic missing\|listening"'
echo "settings: $(tr '\n' ' ' <<<"$settings")"
