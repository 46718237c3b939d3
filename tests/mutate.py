"""`make mutate`: plant one-line bugs, one at a time, in a copy of the tree and check that the
tests meant to catch each one fail. Not part of `make test` (it runs the slow tests many times).

Each mutation names a file, the exact original line(s) (compared without leading spaces; a
line of context may come first when the target line alone is not unique) and the
replacement (line for line indented like the original, or like its first line). A pattern that no longer matches
exactly once is reported as an error, so that a refactoring shows which entries to update.

    python tests/mutate.py            # all
    python tests/mutate.py wave fsync # those whose name contains one of the words
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    original: str
    replacement: str
    tests: tuple


MUTATIONS = [
    Mutation("riff size not updated at fsync", "edge/storage.py",
             'os.pwrite(fd, struct.pack("<I", 36 + data_bytes), 4)', "pass",
             ("tests/test_storage.py", "tests/test_power_cut.py")),
    Mutation("data size not updated at fsync", "edge/storage.py",
             'os.pwrite(fd, struct.pack("<I", data_bytes), 40)', "pass",
             ("tests/test_storage.py", "tests/test_power_cut.py")),
    Mutation("no fsync of the open segment", "edge/storage.py",
             "os.pwrite(fd, struct.pack(\"<I\", data_bytes), 40)\nos.fsync(fd)",
             "os.pwrite(fd, struct.pack(\"<I\", data_bytes), 40)",
             ("tests/test_power_cut.py",)),
    Mutation("sigterm does not close the open segment", "edge/recorder.py",
             "self.notifier.stopping()\nself._store(self._segmenter.flush())", "self.notifier.stopping()",
             ("tests/test_service.py",)),
    Mutation("dropped frames never counted", "edge/audio.py",
             "self.dropped_frames += round(self._block_windows)", "pass",
             ("tests/test_capture.py",)),
    Mutation("wait_for_device ignored", "edge/cli.py",
             "recorder.run(MicrophoneSource(settings.audio), stop, wait_for_device=notifier.enabled)",
             "recorder.run(MicrophoneSource(settings.audio), stop)",
             ("tests/test_service.py",)),
    Mutation("no watchdog ping while waiting for the microphone", "edge/supervisor.py",
             "return True\nself.watchdog.ping()", "return True",
             ("tests/test_service.py",)),
    Mutation("two LED patterns alike", "edge/indicator.py",
             "MIC_MISSING = (0.1, 0.1)", "MIC_MISSING = (0.25, 0.25)",
             ("tests/test_indicator.py",)),
    Mutation("blink on and off times swapped", "edge/indicator.py",
             "self._led.blink(on_time=on_time, off_time=off_time)",
             "self._led.blink(on_time=off_time, off_time=on_time)",
             ("tests/test_indicator.py",)),
    Mutation("clock_synced always false", "edge/clock.py",
             "return TIMESYNC_FLAG.exists()", "return False",
             ("tests/test_status_doctor.py", "tests/test_capture.py")),
    Mutation("clock_synced not taken from the clock", "edge/recorder.py",
             "boot_id=self.clock.boot_id(), clock_synced=self.clock.synced(), mic_gaps=list(self._gaps))",
             "boot_id=self.clock.boot_id(), clock_synced=True, mic_gaps=list(self._gaps))",
             ("tests/test_capture.py",)),
    Mutation("settings lose their export section", "edge/config.py",
             "export: ExportSettings = ExportSettings()", "",
             ("tests/test_export.py",)),
    Mutation("recover() returns nothing", "edge/storage.py",
             "recovered.append(self._finish(part, start, samples, unknown, recovered=True))",
             "self._finish(part, start, samples, unknown, recovered=True)",
             ("tests/test_storage.py",)),
    Mutation("unit sandbox loosened", "systemd/edge-recorder.service",
             "ProtectKernelTunables=yes", "",
             ("tests/test_systemd_unit.py",)),
    Mutation("storage retried every 30 s", "edge/supervisor.py",
             "STORAGE_RETRY_S = 10.0", "STORAGE_RETRY_S = 30.0",
             ("tests/test_full_card.py",)),
    Mutation("write errors crash the recorder", "edge/recorder.py",
             "except StorageUnavailable as exc:", "except ValueError as exc:",
             ("tests/test_full_card.py",)),
    Mutation("a failing fsync goes unnoticed", "edge/storage.py",
             "self._sync()\nexcept OSError as exc:", "self._sync()\nexcept ValueError as exc:",
             ("tests/test_full_card.py",)),
    Mutation("capture_rate null always asks for 16 kHz", "edge/capture.py",
             "rate = capture_rate or (TARGET_RATE if TARGET_RATE in device.rates else device.default_rate)",
             "rate = capture_rate or TARGET_RATE",
             ("tests/test_capture.py",)),
    Mutation("relative paths ignore STATE_DIRECTORY", "edge/config.py",
             'return (Path(state.split(":")[0]) if state else Path.cwd()) / path', "return Path.cwd() / path",
             ("tests/test_service.py",)),
    Mutation("max_segment_s doubled", "edge/segmenter.py",
             "self.max_frames = frames(settings.max_segment_s * 1000)",
             "self.max_frames = frames(settings.max_segment_s * 2000)",
             ("tests/test_capture.py",)),
    Mutation("doctor: storage floor never fails", "edge/doctor.py",
             "if free < settings.storage.min_free_mb:", "if False:",
             ("tests/test_status_doctor.py",)),
    Mutation("doctor: GPIO never tried", "edge/doctor.py",
             "LED(pin).close()", "pass",
             ("tests/test_status_doctor.py",)),
    Mutation("doctor: clock always OK", "edge/doctor.py",
             "if SystemClock().synced():", "if True:",
             ("tests/test_status_doctor.py",)),
    Mutation("installer ignores export.auto", "systemd/install.sh",
             'if [ "${settings%% *}" = 1 ]; then', 'if [ "${settings%% *}" = 0 ]; then',
             ("tests/test_install.py",)),
    Mutation("export trusts an unverified copy", "edge/export.py",
             'if copy_hash != entry["sha256"]:', "if False:",
             ("tests/test_export.py",)),
    Mutation("export copies again what a killed run had verified", "edge/export.py",
             'if self._verified_copy_exists(final, size, entry["sha256"]):', "if False:",
             ("tests/test_export.py",)),
    Mutation("detector state reset on every frame", "edge/recorder.py",
             "probability = self.vad(frame)", "self.vad.reset(); probability = self.vad(frame)",
             ("tests/test_indicator.py", "tests/test_capture.py")),
    Mutation("suppression never floored", "edge/denoise.py",
             "gain = np.maximum(prior_snr / (1 + prior_snr), self.floor_gain)", "gain = prior_snr / (1 + prior_snr)",
             ("tests/test_denoise.py",)),
    Mutation("noise window never slides", "edge/denoise.py",
             "self._running_min = self._smoothed.copy()", "pass",
             ("tests/test_denoise.py",)),
    Mutation("suppression from the first frame", "edge/denoise.py",
             "if self._hops < self.learning_hops:", "if False:",
             ("tests/test_denoise.py",)),
    Mutation("suppressor not reset with the model", "edge/denoise.py",
             "self.suppressor.reset()\nself.detector.reset()", "self.detector.reset()",
             ("tests/test_denoise.py",)),
]


def apply(tree: Path, mutation: Mutation) -> str | None:
    """Plant the mutation in ``tree``; returns an error when its pattern does not match once."""
    path = tree / mutation.file
    lines = path.read_text().split("\n")
    wanted = [line.strip() for line in mutation.original.split("\n")]
    hits = [i for i in range(len(lines) - len(wanted) + 1)
            if [line.strip() for line in lines[i:i + len(wanted)]] == wanted]
    if len(hits) != 1:
        return f"pattern matches {len(hits)} times in {mutation.file}: {mutation.original!r}"
    at = hits[0]
    indents = [line[: len(line) - len(line.lstrip())] for line in lines[at:at + len(wanted)]]
    replacement = mutation.replacement.split("\n")
    if len(replacement) != len(wanted):
        indents = [indents[0]] * len(replacement)
    lines[at:at + len(wanted)] = [indent + line for indent, line in zip(indents, replacement)]
    path.write_text("\n".join(lines))
    return None


def copy_tree(destination: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.split("\n")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def run_tests(tree: Path, tests: tuple) -> tuple[int, str]:
    """pytest's exit code (0 passed, 1 a test failed, else it could not run) and what says why."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", *tests],
                            cwd=tree, env=env, capture_output=True, text=True)
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED ")]
    return result.returncode, failed[0] if failed else result.stdout[-1500:]


def main(words: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not words or any(w in m.name for w in words)]
    results = []
    with tempfile.TemporaryDirectory(prefix="edge-mutate-") as work:
        pristine = Path(work) / "pristine"
        copy_tree(pristine)
        where = subprocess.run([sys.executable, "-c", "import edge; print(edge.__file__)"], cwd=pristine,
                               env={**os.environ, "PYTHONPATH": str(pristine)}, capture_output=True, text=True)
        assert where.stdout.startswith(str(pristine)), f"the copy's edge is not the one imported: {where.stdout}"
        for mutation in chosen:
            tree = Path(work) / "mutant"
            shutil.rmtree(tree, ignore_errors=True)
            shutil.copytree(pristine, tree, symlinks=True)
            error = apply(tree, mutation)
            started = time.monotonic()
            caught = False
            if error:
                verdict = f"ERROR   {error}"
            else:
                code, output = run_tests(tree, mutation.tests)
                caught = code == 1  # a test failed; not a collection error or a crash of pytest
                verdict = {0: "MISSED  the tests passed", 1: "caught"}.get(code, f"ERROR   pytest exit {code}")
                print(f"    {output.strip()[:300]}")
            print(f"{verdict:8} {mutation.name} ({mutation.file}; {time.monotonic() - started:.0f} s)", flush=True)
            results.append(caught)
    print(f"{sum(results)} of {len(results)} mutations caught")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
