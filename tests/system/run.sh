#!/usr/bin/env bash
# The system test: `make system-test`. Boots a debootstrapped Debian with systemd as PID 1
# (systemd-nspawn), installs the committed HEAD there with `make install`, and runs
# tests/system/checks.py inside: one PASS/FAIL line per check, then "N passed, N failed".
#
#   EDGE_SYSTEM_SUITE=trixie   Debian suite of the booted system (trixie, bookworm)
#   EDGE_SYSTEM_CACHE=DIR      apt and pip downloads kept between runs (default
#                              /var/cache/edge-system-test; empty: none)
#   EDGE_SYSTEM_KEEP=1         leave the stopped root, its journal and the logs in place
#   EDGE_SYSTEM_TIMEOUT=780    seconds after which the checks are stopped as hung
#   EDGE_SYSTEM_PREPARE=CMD    run as CMD ROOT HEAD before the boot instead of cloning HEAD
#                              into ROOT/root/edge-recorder (tests/system/cloud_init.sh)
#   EDGE_SYSTEM_CHECKS=PATH    the checks to run inside (default: tests/system/checks.py)
#   EDGE_SYSTEM_BOOT_TIMEOUT=120  seconds the boot may take until systemd is running
#
# Root only; skipped (exit 0) with the reason where nspawn cannot run. Everything it starts
# or mounts is stopped and removed on exit, failed or not.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
suite=${EDGE_SYSTEM_SUITE:-trixie}
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
cache=${EDGE_SYSTEM_CACHE-/var/cache/edge-system-test}
# The checks run well inside this; it only bounds a run that hangs.
checks_timeout_s=${EDGE_SYSTEM_TIMEOUT:-780}
started=$(date +%s)

say() { echo "system-test: [$(( $(date +%s) - started )) s] $*" >&2; }
skip() { echo "SKIP system test: $*"; exit 0; }

[ "$(id -u)" = 0 ] || skip "needs root (systemd-nspawn, debootstrap): run 'sudo make system-test'"
missing=()
for tool in systemd-nspawn:systemd-container debootstrap:debootstrap git:git; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null || true
fi
for tool in systemd-nspawn script nsenter debootstrap git; do
    command -v "$tool" >/dev/null 2>&1 || skip "'$tool' is missing and could not be installed"
done
[ -d /sys/fs/cgroup ] && grep -qw cgroup2 /proc/filesystems || skip "the kernel has no cgroup2: DevicePolicy= cannot be enforced"

work=$(mktemp -d /var/tmp/edge-system-test.XXXXXX)
root="$work/root"
machine="edge-systest-$$"
script_pid=""
nspawn=""
leader=""

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e  # every step of the clean-up runs, whatever the one before it did
    if [ -n "$leader" ] && kill -0 "$leader" 2>/dev/null; then
        if [ "${EDGE_SYSTEM_KEEP:-0}" = 1 ]; then
            timeout 30 nsenter -t "$leader" -a journalctl -b --no-pager >"$work/journal.txt" 2>&1
        fi
        timeout 30 nsenter -t "$leader" -a systemctl poweroff >/dev/null 2>&1 || true
    fi
    if [ -n "$script_pid" ]; then
        for _ in $(seq 60); do kill -0 "$script_pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$script_pid" 2>/dev/null; then
            # Killing the container's init ends every process of its PID namespace.
            say "the container did not power off: killing it"
            [ -n "$leader" ] && kill -KILL "$leader" 2>/dev/null
            for _ in $(seq 20); do kill -0 "$script_pid" 2>/dev/null || break; sleep 0.5; done
            kill -KILL "$script_pid" ${nspawn:+"$nspawn"} 2>/dev/null || true
        fi
    fi
    # Anything still mounted below the root (nspawn unmounts on a clean exit) goes first.
    grep -o " $work[^ ]*" /proc/mounts | sort -r | while read -r mount_point; do
        umount -l "$mount_point"
    done
    if [ "${EDGE_SYSTEM_KEEP:-0}" = 1 ]; then
        say "kept $work"
    else
        rm -rf "$work"
    fi
    say "took $(( $(date +%s) - started )) s"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A fresh root, and the committed HEAD (not the working tree) cloned into it.
say "Debian $suite $arch root in $root"
"$repo/tests/targets/debian-root.sh" "$suite" "$arch" "$root" >/dev/null
head=$(git -C "$repo" rev-parse HEAD)
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no)" ] || say "uncommitted changes are not tested: only HEAD is"
if [ -n "${EDGE_SYSTEM_PREPARE:-}" ]; then
    say "preparing the root: $EDGE_SYSTEM_PREPARE"
    $EDGE_SYSTEM_PREPARE "$root" "$head"
else
    git clone --quiet --no-checkout "$repo" "$root/root/edge-recorder"
    git -C "$root/root/edge-recorder" checkout --quiet --detach "$head"
    say "installing $(git -C "$repo" log -1 --format='%h %s' "$head")"
fi

binds=()
if [ -n "$cache" ]; then
    mkdir -p "$cache/apt" "$cache/pip"
    binds+=("--bind=$cache/apt:/var/cache/apt/archives" "--bind=$cache/pip:/root/.cache/pip")
fi

# systemd-nspawn needs a terminal: script gives it one. A unified cgroup hierarchy inside
# (the host may be hybrid) and the bpf() system call let systemd enforce DevicePolicy=.
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 script -qfc "$(printf '%q ' systemd-nspawn \
    --quiet --directory="$root" --machine="$machine" --boot --register=no --keep-unit \
    --system-call-filter=bpf "${binds[@]}")" "$work/console.log" </dev/null >/dev/null 2>&1 &
script_pid=$!
disown "$script_pid"  # no "Killed" line from bash if the clean-up has to kill it

# systemd-nspawn is below script (perhaps below a shell); the container's init is its child
# named systemd (nspawn's first child is a helper that execs nothing and exits soon).
child_named() {
    ps -eo pid=,ppid=,comm= | awk -v parent="$1" -v name="$2" '$2 == parent && (name == "" || $3 == name) {print $1; exit}'
}
find_nspawn() {
    local pid=$script_pid found _
    for _ in 1 2 3; do
        found=$(child_named "$pid" systemd-nspawn)
        [ -n "$found" ] && { echo "$found"; return; }
        pid=$(child_named "$pid" "")
        [ -n "$pid" ] || return 0
    done
}
for _ in $(seq 240); do  # 2 minutes: at a load of 5 (2 cores) once more than 1
    [ -n "$nspawn" ] || nspawn=$(find_nspawn)
    [ -n "$nspawn" ] && leader=$(child_named "$nspawn" systemd)
    [ -n "$leader" ] && break
    kill -0 "$script_pid" 2>/dev/null || break
    sleep 0.5
done
if [ -z "$leader" ]; then
    say "systemd-nspawn did not start; its console:"
    tail -n 20 "$work/console.log" >&2 || true
    echo "FAIL boot: no container"
    echo "0 passed, 1 failed"
    exit 1
fi

inside() {
    nsenter -t "$leader" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}
boot_timeout_s=${EDGE_SYSTEM_BOOT_TIMEOUT:-120}
booted=$(timeout "$boot_timeout_s" bash -c 'until state=$(nsenter -t "$1" -a systemctl is-system-running 2>/dev/null);
    [ "$state" = running ] || [ "$state" = degraded ]; do sleep 0.5; done; echo "$state"' _ "$leader" || true)
if [ -z "$booted" ]; then
    tail -n 20 "$work/console.log" >&2 || true
    echo "FAIL boot: systemd did not finish booting in $boot_timeout_s s"
    echo "0 passed, 1 failed"
    exit 1
fi
say "booted ($booted, systemd $(inside systemctl --version | awk 'NR==1{print $2}'), init pid $leader); running the checks"

# In the background so that a signal to this script is handled at once (bash runs traps only
# between foreground commands), and the clean-up powers the container off.
(set -o pipefail; inside timeout "$checks_timeout_s" ${EDGE_SYSTEM_CHECKS:-python3 -u /root/edge-recorder/tests/system/checks.py} \
    | tee "$work/checks.log") &
checks_status=0
wait $! || checks_status=$?
passed=$(grep -c '^PASS ' "$work/checks.log" || true)
failed=$(grep -c '^FAIL ' "$work/checks.log" || true)
if [ "$checks_status" = 124 ]; then
    echo "FAIL checks: stopped after ${checks_timeout_s} s"
    failed=$((failed + 1))
elif [ "$checks_status" != 0 ] && [ "$failed" = 0 ]; then
    echo "FAIL checks: exited with $checks_status"
    failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
