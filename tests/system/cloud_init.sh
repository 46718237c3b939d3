#!/usr/bin/env bash
# The fleet-from-Imager test: `make cloud-init-test`. config/cloud-init/user-data, as
# Raspberry Pi Imager would put it on a card, is given to Debian's cloud-init as a NoCloud
# seed in a fresh trixie root, which boots with systemd as PID 1 (tests/system/run.sh); then
# tests/system/cloud_init_checks.sh checks inside that the recorder was installed the
# README's way and runs with the settings the user-data gave it.
#
# The code comes from where a school's would: `git clone` of a URL, here a copy of the
# committed HEAD served over HTTP on 127.0.0.1 (the root shares the host's network). Root
# only; skipped (exit 0) with the reason like the system test.
#
#   tests/system/cloud_init.sh            the whole test
#   tests/system/cloud_init.sh prepare ROOT HEAD   (run.sh's EDGE_SYSTEM_PREPARE hook)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${EDGE_SYSTEM_CACHE-/var/cache/edge-system-test}

prepare() {
    local root=$1 url=${EDGE_CLOUD_INIT_REPO_URL:?set by the whole test}
    # What Raspberry Pi OS trixie has and a debootstrapped Debian lacks: cloud-init itself, and
    # what its modules call at first boot (ip for the network report, ssh-keygen for host keys).
    [ -n "$cache" ] && mkdir -p "$cache/apt" && mount --bind "$cache/apt" "$root/var/cache/apt/archives"
    { chroot "$root" apt-get -o DPkg::Lock::Timeout=600 update -qq \
        && DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
            cloud-init iproute2 openssh-client; } >"$root/root/prepare.log" 2>&1 || status=$?
    [ -n "$cache" ] && umount "$root/var/cache/apt/archives"
    if [ "${status:-0}" != 0 ]; then
        tail -n 20 "$root/root/prepare.log" >&2
        echo "cloud-init-test: installing cloud-init in the root failed" >&2
        return 1
    fi
    # The seed Imager writes to the boot partition, given where cloud-init's NoCloud looks on
    # any system. The host's network is shared: cloud-init must not configure it.
    mkdir -p "$root/var/lib/cloud/seed/nocloud" "$root/etc/cloud/cloud.cfg.d"
    sed "s#https://git.school.example/edge-recorder.git#$url#" "$repo/config/cloud-init/user-data" \
        >"$root/var/lib/cloud/seed/nocloud/user-data"
    grep -q "$url" "$root/var/lib/cloud/seed/nocloud/user-data" \
        || { echo "cloud-init-test: the user-data no longer clones https://git.school.example/edge-recorder.git" >&2; return 1; }
    printf 'instance-id: edge-cloud-init-test\n' >"$root/var/lib/cloud/seed/nocloud/meta-data"
    printf 'datasource_list: [NoCloud, None]\nnetwork: {config: disabled}\n' \
        >"$root/etc/cloud/cloud.cfg.d/99-edge-cloud-init-test.cfg"
    install -m 0755 "$here/cloud_init_checks.sh" "$root/root/cloud_init_checks.sh"
    cp "$repo/config/cloud-init/user-data" "$root/root/user-data.example"
}

if [ "${1:-}" = prepare ]; then
    prepare "$2"
    exit
fi

[ "$(id -u)" = 0 ] || { echo "SKIP cloud-init test: needs root (systemd-nspawn, debootstrap): run 'sudo make cloud-init-test'"; exit 0; }
served=$(mktemp -d /var/tmp/edge-cloud-init-repo.XXXXXX)
server=""
finish() {
    [ -n "$server" ] && kill "$server" 2>/dev/null
    rm -rf "$served"
}
trap finish EXIT
# A bare clone of HEAD behind git's "dumb" HTTP: what any web server can serve.
git clone --quiet --bare --no-local "$repo" "$served/edge-recorder.git"
git -C "$served/edge-recorder.git" update-server-info
port_file="$served/port"
python3 - "$served" "$port_file" <<'PY' &
import functools, http.server, sys
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # git probes loose objects before packs: 404s are normal
        pass
handler = functools.partial(Quiet, directory=sys.argv[1])
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os; os.rename(sys.argv[2] + ".tmp", sys.argv[2])
server.serve_forever()
PY
server=$!
for _ in $(seq 100); do [ -s "$port_file" ] && break; sleep 0.1; done
[ -s "$port_file" ] || { echo "FAIL cloud-init test: the HTTP server did not start"; exit 1; }
export EDGE_CLOUD_INIT_REPO_URL="http://127.0.0.1:$(cat "$port_file")/edge-recorder.git"
# The first boot installs everything (apt, pip): systemd is "running" only once cloud-init's
# final stage, and with it `make install`, is done.
EDGE_SYSTEM_PREPARE="$here/cloud_init.sh prepare" EDGE_SYSTEM_CHECKS=/root/cloud_init_checks.sh \
    EDGE_SYSTEM_BOOT_TIMEOUT=${EDGE_SYSTEM_BOOT_TIMEOUT:-1200} "$here/run.sh"
