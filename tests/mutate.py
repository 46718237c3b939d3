"""`make mutate`: mutation testing with mutmut, one module of edge/ at a time, and a score each.

mutmut plants small bugs (operators, constants, arguments, return values, ...) in every
function of a module, runs the tests once to learn which test calls which function, and then
runs, for each mutant, only the tests that call the mutated function (first failure stops it).
A mutant is killed when one of them fails; one left alive is run once more against all of the
module's tests (NOT_RUN_BY_EVERY_TEST: tests that run `edge` in a child process). Not part of `make test`: see docs/testing.md for how
long it takes.

Each module is mutated in a copy of the tree under .mutmut/<module>/ (mutmut works in a
``mutants/`` folder of the directory it runs in), with [tool.mutmut] from pyproject.toml plus
the module and the test files that exercise it (MODULE_TESTS). Survivors that no test can kill
(the program behaves the same) are listed with a reason in tests/mutants-equivalent.txt and
left out of the score. So are survivors that change nothing but what ``--help`` prints (the
help, description and metavar of argparse's calls: found by comparing the mutant's syntax
tree with the original's without those arguments), counted in a column of their own.

    python tests/mutate.py                       # every module
    python tests/mutate.py segmenter resample    # some
    MUTATE_JOBS=2 python tests/mutate.py status  # mutants run in parallel (default 1)
"""

from __future__ import annotations

import ast
import copy
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".mutmut"
EQUIVALENT = REPO / "tests" / "mutants-equivalent.txt"
TARGET_SCORE = 90.0

# The modules that keep or move recordings and run the service, and the tests that exercise
# each (mutmut runs, per mutant, those of them that call the mutated function).
MODULE_TESTS = {
    "segmenter": ["tests/test_segmenter.py", "tests/test_segmenter_properties.py"],
    "resample": ["tests/test_resample.py", "tests/test_wavio.py"],
    "status": ["tests/test_status.py", "tests/test_status_doctor.py", "tests/test_supervisor.py"],
    "storage": ["tests/test_storage.py", "tests/test_recovery_properties.py", "tests/test_durability.py",
                "tests/test_offload.py",
                "tests/test_full_card.py", "tests/test_encryption.py", "tests/test_forget.py",
                "tests/test_retention.py"],
    "plain_wav": ["tests/test_storage.py", "tests/test_recovery_properties.py", "tests/test_durability.py",
                  "tests/test_encryption.py"],
    "supervisor": ["tests/test_supervisor.py", "tests/test_recorder.py", "tests/test_full_card.py",
                   "tests/test_mic_loss.py"],
    "capture": ["tests/test_capture.py", "tests/test_capture_hang.py"],
    "audio": ["tests/test_open_timeout.py", "tests/test_capture.py", "tests/test_capture_hang.py",
              "tests/test_mic_loss.py"],
    "recorder": ["tests/test_recorder.py", "tests/test_capture.py", "tests/test_full_card.py",
                 "tests/test_mic_loss.py", "tests/test_indicator.py", "tests/test_retention.py",
                 "tests/test_privacy_button.py", "tests/test_status_doctor.py", "tests/test_manifest.py",
                 "tests/test_cannot_start.py"],
    "encryption": ["tests/test_encryption.py"],
    "retention": ["tests/test_retention.py"],
    "sync": ["tests/test_sync_unit.py", "tests/test_sync.py"],
    "sync_staging": ["tests/test_sync.py"],
    "sync_state": ["tests/test_sync_state.py", "tests/test_sync.py", "tests/test_retention.py", "tests/test_forget.py"],
    "sync_card": ["tests/test_sync.py"],
    "sync_index": ["tests/test_sync.py"],
    "rclone_rc": ["tests/test_sync.py", "tests/test_rclone.py"],
    "catalogue_pages": ["tests/test_catalogue.py"],
    "catalogue_table": ["tests/test_catalogue.py"],
    "export": ["tests/test_export.py", "tests/test_durability.py"],
    "export_state": ["tests/test_export.py", "tests/test_indicator.py", "tests/test_forget.py"],
    "offload": ["tests/test_offload.py", "tests/test_export.py", "tests/test_sync.py", "tests/test_durability.py",
                "tests/test_forget.py"],
}
KILLED = {"killed", "timeout", "segfault"}
NOT_RUN_BY_EVERY_TEST = {"survived", "no tests"}
"""mutmut learns which test calls which function in the test process only: a test that runs
`edge` in a child process (the capture process, `edge sync` cut short) is never picked for
the functions that child runs. So a mutant mutmut leaves alive, or finds no test for, is run
once more by this script against all of its module's test files (not one listed as equivalent)."""
UNTESTED_TIMEOUT_S = 300
HELP_ARGUMENTS = {"help", "description", "metavar"}
"""Keyword arguments of argparse's calls that only change what --help prints."""


def equivalent_mutants() -> dict[str, str]:
    """Mutant name -> why it cannot be told apart from the original (one line each)."""
    listed = {}
    for line in EQUIVALENT.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition(" ")
            listed[name] = reason.strip()
    return listed


def help_text_only(tree: Path, module: str, names: list) -> set:
    """Those of the mutants ``names`` whose function differs from the original only in the
    HELP_ARGUMENTS of its calls (mutmut keeps every variant in its mutants/ copy of the module,
    as functions named ..__mutmut_N beside ..__mutmut_orig)."""
    source = ast.parse((tree / "mutants" / "edge" / f"{module}.py").read_text())
    functions = {node.name: node for node in ast.walk(source) if isinstance(node, ast.FunctionDef)}

    def without_help(function: ast.FunctionDef) -> str:
        function = copy.deepcopy(function)
        function.name = ""
        for call in ast.walk(function):
            if isinstance(call, ast.Call):
                call.keywords = [k for k in call.keywords if k.arg not in HELP_ARGUMENTS]
        return ast.dump(function)

    found = set()
    for name in names:
        variant = name.rsplit(".", 1)[-1]
        original = variant.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
        if {variant, original} <= functions.keys() and \
                without_help(functions[variant]) == without_help(functions[original]):
            found.add(name)
    return found


def copy_tree(destination: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.split("\n")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def configure(tree: Path, module: str) -> None:
    """The copy's pyproject.toml: [tool.mutmut] limited to ``module`` and its tests."""
    pyproject = tree / "pyproject.toml"
    text = pyproject.read_text()
    tests = [t for t in MODULE_TESTS[module] if (tree / t).exists()]
    section = (f'only_mutate = ["edge/{module}.py"]\n'
               f"pytest_add_cli_args_test_selection = {tests!r}\n").replace("'", '"')
    text = text.replace("[tool.mutmut]\n", "[tool.mutmut]\n" + section, 1)
    pyproject.write_text(text)


def mutate(module: str, jobs: int) -> dict[str, str]:
    """Run mutmut on one module; mutant name -> status."""
    tree = WORK / module
    shutil.rmtree(tree, ignore_errors=True)
    copy_tree(tree)
    configure(tree, module)
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    log = WORK / f"{module}.log"
    with open(log, "w") as out:
        subprocess.run([str(mutmut), "run", "--max-children", str(jobs)], cwd=tree, env=env,
                       stdout=out, stderr=subprocess.STDOUT)
    listed = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=tree, env=env,
                            capture_output=True, text=True).stdout
    results = dict(re.findall(r"^\s+(\S+): (.+)$", listed, re.M))
    if not results:
        print(f"{module}: mutmut produced no results, see {log}")
    return results


def run_untested(module: str, names: list, jobs: int) -> dict[str, str]:
    """Mutant name -> status, each of ``names`` run against all the module's test files in
    mutmut's copy (the mutant chosen by MUTANT_UNDER_TEST, which the child process inherits)."""
    mutants = WORK / module / "mutants"
    tests = [t for t in MODULE_TESTS[module] if (mutants / t).exists()]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    running: dict = {}
    statuses = {}
    pending = list(names)
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            running[name] = (subprocess.Popen([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                              cwd=mutants, env={**env, "MUTANT_UNDER_TEST": name},
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), time.monotonic())
        for name, (process, started) in list(running.items()):
            if process.poll() is None and time.monotonic() - started < UNTESTED_TIMEOUT_S:
                continue
            if process.returncode is None:
                process.kill()
                process.wait()
                statuses[name] = "timeout"
            else:
                statuses[name] = "survived" if process.returncode == 0 else "killed"
            del running[name]
        time.sleep(0.2)  # polling children: nothing to synchronise with
    return statuses


def main(words: list[str]) -> int:
    modules = [m for m in MODULE_TESTS if not words or m in words]
    unknown = set(words) - set(MODULE_TESTS)
    if unknown:
        print(f"unknown modules: {', '.join(sorted(unknown))} (known: {', '.join(MODULE_TESTS)})")
        return 2
    jobs = int(os.environ.get("MUTATE_JOBS", "1"))
    equivalent = equivalent_mutants()
    WORK.mkdir(exist_ok=True)
    rows, ok = [], True
    for module in modules:
        started = time.monotonic()
        results = mutate(module, jobs)
        results.update(run_untested(module, [k for k, v in results.items()
                                             if v in NOT_RUN_BY_EVERY_TEST and k not in equivalent], jobs))
        minutes = (time.monotonic() - started) / 60
        counted = {k: v for k, v in results.items() if k not in equivalent}
        help_text = help_text_only(WORK / module, module, [k for k, v in counted.items() if v not in KILLED])
        counted = {k: v for k, v in counted.items() if k not in help_text}
        killed = sum(v in KILLED for v in counted.values())
        survivors = sorted(k for k, v in counted.items() if v not in KILLED)
        score = 100.0 * killed / len(counted) if counted else 0.0
        ok &= score >= TARGET_SCORE
        rows.append((module, len(results), len(results) - len(counted) - len(help_text), len(help_text), killed,
                     len(survivors), score, minutes))
        for name in survivors:
            print(f"  not killed ({counted[name]}): {name}   (mutmut show {name}, in .mutmut/{module})")
        print(f"{module}: {score:.1f} % ({killed} of {len(counted)} killed) in {minutes:.1f} min", flush=True)
    print(f"\n{'module':12} {'mutants':>8} {'equiv.':>7} {'help':>5} {'killed':>7} {'alive':>6} {'score':>7} "
          f"{'minutes':>8}")
    for module, total, equiv, help_text, killed, alive, score, minutes in rows:
        print(f"{module:12} {total:8} {equiv:7} {help_text:5} {killed:7} {alive:6} {score:6.1f}% {minutes:8.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
