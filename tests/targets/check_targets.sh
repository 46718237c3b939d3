#!/usr/bin/env bash
# The README's commands in fresh Debian roots, as a new user of each OS would run them, and
# their output compared with this machine's.
#
#   tests/targets/check_targets.sh [TARGET ...]   (make check-targets TARGETS="...")
#
# TARGET is SUITE-ARCH: trixie-amd64 (native: make test too), trixie-arm64, bookworm-arm64
# (qemu-user: make demo and edge vad only, ~10x slower). Each gets a fresh root from
# tests/targets/debian-root.sh, a `git clone` of this repository's committed HEAD with
# ../shared beside it (read-only), and a user "tester". Debian packages are installed by root
# (what `sudo make ...` does); venv, demo, vad and tests run as tester. ARM roots see a
# Raspberry Pi 4's /proc/cpuinfo (cpuinfo-pi4-arm64.txt): ai-edge-litert crashes on the
# host's x86 one under qemu. Compared with this machine's .venv: `edge vad` decisions at 0.5
# equal and probabilities within VAD_TOLERANCE; `make demo` segments byte-identical.
# EDGE_CHECK_TESTS=1: make test in the ARM roots too; EDGE_CHECK_ROOT_TESTS=1: make test
# again as root (the full-card tests).
# Root only. Roots stay in $EDGE_CHECK_DIR (default /var/tmp/edge-check) for inspection.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SHARED="$(cd "$REPO/../shared" && pwd -P)"
WORK=${EDGE_CHECK_DIR:-/var/tmp/edge-check}
VAD_TOLERANCE=${VAD_TOLERANCE:-0.01}
WAV=tests/data/silero_test_6s.wav
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(trixie-amd64 trixie-arm64 bookworm-arm64)

say() { echo "check-targets: $*"; }
die() { echo "check-targets: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mounts): sudo make check-targets"
for t in "${targets[@]}"; do
    case "$t" in trixie-amd64|trixie-arm64|bookworm-arm64|bookworm-amd64) ;;
        *) die "unknown target $t, expected trixie-amd64, trixie-arm64, bookworm-arm64 or bookworm-amd64" ;;
    esac
done
[ -x "$REPO/.venv/bin/edge" ] || die "$REPO/.venv is missing: run make venv first (the host's output is the reference)"
[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no)" ] \
    || say "note: uncommitted changes in $REPO are not in the clones (HEAD $(git -C "$REPO" rev-parse --short HEAD) is)"

mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount -R "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" 2>/dev/null || true
    done
    mounts=()
}
trap 'cleanup; rm -rf "${reference:-}"' EXIT
trap 'exit 130' INT TERM
mounted() { mount "$@"; mounts+=("${!#}"); }

# The host's reference output.
mkdir -p "$WORK"
reference=$(mktemp -d "$WORK/reference.XXXXXX")
(cd "$REPO" && .venv/bin/edge vad "$WAV" >"$reference/vad.csv" \
  && rm -rf "$reference/demo" && .venv/bin/edge --log-level warning process tests/data/lesson_15s.wav "$WAV" \
       --out "$reference/demo" --config config/edge.yaml >/dev/null)

# Decisions equal and probabilities within the tolerance; prints the largest difference.
compare_vad() {
    python3 - "$1" "$2" "$VAD_TOLERANCE" <<'EOF'
import csv, sys
def read(path):
    with open(path) as f:
        return [(row["start_s"], float(row["prob"])) for row in csv.DictReader(f)]
host, there, tolerance = read(sys.argv[1]), read(sys.argv[2]), float(sys.argv[3])
if [t for t, _ in host] != [t for t, _ in there]:
    sys.exit(f"edge vad: {len(there)} windows, host has {len(host)}")
flips = sum((a > 0.5) != (b > 0.5) for (_, a), (_, b) in zip(host, there))
worst = max(abs(a - b) for (_, a), (_, b) in zip(host, there))
print(f"edge vad: {len(host)} windows, {flips} decisions differ, max |prob - host| = {worst:.4f} (tolerance {tolerance})")
sys.exit(1 if flips or worst > tolerance else 0)
EOF
}

# Same segments (source, bounds, samples, sha256 of the audio) as the host's demo.
compare_demo() {
    python3 - "$1" "$2" <<'EOF'
import glob, json, os, sys
def read(folder):
    # A manifest per day folder (docs/card-layout.md); segments by seq.
    entries = [json.loads(line) for path in glob.glob(os.path.join(folder, "*", "manifest.jsonl"))
               for line in open(path)]
    return [tuple(e[k] for k in ("source", "start_s", "end_s", "samples", "sha256"))
            for e in sorted(entries, key=lambda e: e["seq"])]
host, there = read(sys.argv[1]), read(sys.argv[2])
same = host == there
print(f"make demo: {len(there)} segments, host {len(host)}: " + ("byte-identical" if same else "DIFFERENT"))
if not same:
    for a, b in zip(host, there):
        if a != b: print(f"  host {a}\n  here {b}")
sys.exit(0 if same else 1)
EOF
}

results=()
check_target() {
    local target=$1 suite=${1%-*} arch=${1#*-} root start step_start
    root="$WORK/$target"
    start=$SECONDS
    say "== $target: fresh root in $root"
    # Mounts left by a killed run: detach them before the old root is deleted (its /dev is the host's).
    awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r | xargs -r -n1 umount -l
    "$HERE/debian-root.sh" "$suite" "$arch" "$root" >/dev/null || return 1
    mounted -t proc proc "$root/proc"
    mounted -t sysfs sys "$root/sys"
    mounted --rbind /dev "$root/dev"
    mount --make-rslave "$root/dev"
    if [ "$arch" != "$(dpkg --print-architecture)" ]; then
        mounted --bind "$HERE/cpuinfo-pi4-arm64.txt" "$root/proc/cpuinfo"
    fi
    chroot "$root" useradd --create-home --shell /bin/bash --groups audio tester || return 1
    local home="$root/home/tester"
    mkdir -p "$home/shared"
    mounted --bind "$SHARED" "$home/shared"
    mount -o remount,bind,ro "$home/shared"
    git clone -q --no-local "$REPO" "$home/edge-recorder" || return 1
    chroot "$root" chown -R tester:tester /home/tester/edge-recorder

    # A clean environment, as a login would give: nothing of this machine's pip settings.
    local env=(env -i HOME=/home/tester USER=tester PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8)
    as_root() { chroot "$root" env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
                  LANG=C.UTF-8 bash -c "cd /home/tester/edge-recorder && $1"; }
    as_tester() { chroot --userspec=tester:tester --groups=audio "$root" "${env[@]}" \
                    bash -c "cd /home/tester/edge-recorder && $1"; }
    step() {  # step NAME COMMAND...: runs it, logs to $WORK/$target.NAME.log, prints its time
        local name=$1 log="$WORK/$target.$1.log" t0=$SECONDS
        shift
        if "$@" >"$log" 2>&1; then
            say "$target: $name ok ($((SECONDS - t0)) s)"
        else
            say "$target: $name FAILED ($((SECONDS - t0)) s), last lines of $log:"
            tail -n 15 "$log" | sed 's/^/    /'
            return 1
        fi
    }
    local ok=1
    say "$target: $(chroot "$root" python3 --version), $(chroot "$root" uname -m), HEAD $(git -c safe.directory='*' -C "$home/edge-recorder" rev-parse --short HEAD)"
    step sudo-make-deb as_root "make deb" || ok=0
    [ $ok = 1 ] && { step make-venv as_tester "make venv" || ok=0; }
    if [ $ok = 1 ]; then
        # pipefail: a failed comparison fails the pipeline.
        step edge-vad as_tester ".venv/bin/edge vad $WAV > /tmp/vad.csv" \
            && compare_vad "$reference/vad.csv" "$root/tmp/vad.csv" | sed "s/^/check-targets: $target: /" || ok=0
        step make-demo as_tester "make demo" \
            && compare_demo "$reference/demo" "$home/edge-recorder/demo-recordings" \
               | sed "s/^/check-targets: $target: /" || ok=0
        step runtime as_tester ".venv/bin/python -c 'from edge.vad import SileroVad, DEFAULT_MODEL; print(SileroVad(DEFAULT_MODEL).runtime)'" \
            && say "$target: TFLite runtime used: $(tail -n 1 "$WORK/$target.runtime.log")"
        if [ "$arch" = "$(dpkg --print-architecture)" ] || [ "${EDGE_CHECK_TESTS:-0}" = 1 ]; then
            step make-test as_tester "make test" || ok=0
            say "$target: $(grep -E '(passed|failed)' "$WORK/$target.make-test.log" | tail -n 1)"
            # The full-card and tmpfs tests need root and skip as the user; CI runs them on the host.
            if [ "${EDGE_CHECK_ROOT_TESTS:-0}" = 1 ]; then
                step make-test-as-root as_root "make test" || ok=0
                say "$target: $(grep -E '(passed|failed)' "$WORK/$target.make-test-as-root.log" | tail -n 1)"
            fi
        fi
    fi
    cleanup
    local verdict=PASS
    [ $ok = 1 ] || verdict=FAIL
    say "$target: $verdict in $((SECONDS - start)) s"
    results+=("$target $verdict $((SECONDS - start)) s")
}

for t in "${targets[@]}"; do check_target "$t" || results+=("$t FAIL (aborted)"); done
say "summary:"
printf '  %s\n' "${results[@]}"
! printf '%s\n' "${results[@]}" | grep -q FAIL
