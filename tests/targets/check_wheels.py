"""Does every requirement have a wheel on PyPI for every target? Without running the targets.

    python tests/targets/check_wheels.py [TARGET ...]     (default: all of TARGETS)

For each target, requirements.txt's markers are evaluated for that target (not for this
machine), and each requirement that applies, and each of its own dependencies in turn, is
fetched with `pip download --only-binary=:all: --no-deps --platform ... --python-version ...`
from PyPI alone (this machine's pip mirrors are ignored: the Pi has only PyPI). Downloads are
cached in $EDGE_WHEEL_CACHE (default /var/tmp/edge-wheels), so a second run only asks the index.
Prints one line per missing wheel and exits 1 if there is any.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EDGE_WHEEL_CACHE", "/var/tmp/edge-wheels"))
# Built on the device from PyPI's source release (their Debian build dependencies: Makefile).
SOURCE_BUILDS = {"pyaudio": "portaudio19-dev"}


@dataclass(frozen=True)
class Target:
    machine: str
    python: str
    glibc: tuple[int, int]
    # Distributions Debian provides on this target instead of PyPI (edge/target.py).
    from_debian: dict[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        return {"python_version": self.python, "python_full_version": f"{self.python}.0",
                "platform_machine": self.machine, "sys_platform": "linux", "platform_system": "Linux",
                "os_name": "posix", "implementation_name": "cpython",
                "platform_python_implementation": "CPython", "platform_release": "", "extra": ""}

    def pip_options(self) -> list[str]:
        major, minor = self.glibc
        platforms = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 16, -1)]
        platforms.append(f"manylinux2014_{self.machine}")
        if self.machine == "x86_64":
            platforms += ["manylinux2010_x86_64", "manylinux1_x86_64"]
        abi = "cp" + self.python.replace(".", "")
        options = ["--python-version", self.python, "--implementation", "cp", "--abi", abi, "--abi", "abi3",
                   "--abi", "none"]
        for platform in platforms:
            options += ["--platform", platform]
        return options


TARGETS = {
    "trixie-arm64": Target("aarch64", "3.13", (2, 41)),  # Raspberry Pi OS trixie 64-bit: primary
    "bookworm-arm64": Target("aarch64", "3.11", (2, 36)),
    "bookworm-armhf": Target("armv7l", "3.11", (2, 36), {"numpy": "python3-numpy", "pyyaml": "python3-yaml"}),
    "trixie-amd64": Target("x86_64", "3.13", (2, 41)),
    "bookworm-amd64": Target("x86_64", "3.11", (2, 36)),
}


def pypi_only_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def applies(requirement: Requirement, target: Target) -> bool:
    return requirement.marker is None or requirement.marker.evaluate(target.environment())


def download(requirements: list[Requirement], target: Target, folder: Path,
             with_dependencies: bool = False) -> dict[str, Path] | None:
    """The wheels pip picks for ``requirements`` (and their dependencies, resolved together as
    on the device, if asked) on ``target`` by canonical name, or None if PyPI lacks a wheel
    for any of them. One pip run for the lot: pip's start and the index dominate the time."""
    deps = [] if with_dependencies else ["--no-deps"]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", *deps, "--only-binary=:all:", "--progress-bar", "off",
         *target.pip_options(), "-d", str(folder), *map(str, requirements)],
        capture_output=True, text=True, env=pypi_only_env())
    if result.returncode != 0:
        return None
    saved = [Path(p) for p in re.findall(r"(?:Saved|File was already downloaded) (\S+\.whl)", result.stdout)]
    return {canonicalize_name(wheel.name.split("-")[0]): wheel for wheel in saved}


def dependencies(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    return [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]


def check_target(name: str, target: Target, wanted: list[Requirement]) -> tuple[list[str], list[str]]:
    """(one line per requirement found, one line per missing wheel) for ``target``: the
    requirements that apply there resolved together, or else one by one with their
    dependencies, level by level."""
    folder = CACHE / name
    folder.mkdir(parents=True, exist_ok=True)
    found, missing, seen = [], [], set()
    level = [(r, None) for r in wanted if applies(r, target)]
    if not target.from_debian:
        # Resolved together, as pip does on the device (ml_dtypes 0.6 needs numpy 2: with numpy<2
        # pip picks 0.5); only if that fails, the walk below names each missing wheel.
        pypi = [Requirement(f"{r.name}{r.specifier}") for r, _ in level
                if canonicalize_name(r.name) not in SOURCE_BUILDS]
        wheels = download(pypi, target, folder, with_dependencies=True)
        if wheels is not None:
            built = [f"{r.name}{r.specifier}: source build (Debian {SOURCE_BUILDS[canonicalize_name(r.name)]})"
                     for r, _ in level if canonicalize_name(r.name) in SOURCE_BUILDS]
            return built + [wheel.name for wheel in wheels.values()], []
    while level:
        fetch = []
        for requirement, wanted_by in level:
            key = canonicalize_name(requirement.name)
            if key in seen:
                continue
            seen.add(key)
            requirement = Requirement(f"{requirement.name}{requirement.specifier}")
            via = f" (needed by {wanted_by})" if wanted_by else ""
            if key in target.from_debian:
                found.append(f"{requirement}: Debian {target.from_debian[key]}{via}")
            elif key in SOURCE_BUILDS:
                found.append(f"{requirement}: source build (Debian {SOURCE_BUILDS[key]}){via}")
            else:
                fetch.append((requirement, via))
        # All at once; only if that fails, one by one to name each missing wheel.
        wheels = download([r for r, _ in fetch], target, folder) if fetch else {}
        if wheels is None:
            wheels = {}
            for requirement, _ in fetch:
                wheels.update(download([requirement], target, folder) or {})
        level = []
        for requirement, via in fetch:
            wheel = wheels.get(canonicalize_name(requirement.name))
            if wheel is None:
                missing.append(f"{name} ({target.machine}, Python {target.python}): "
                               f"no wheel on PyPI for {requirement}{via}")
                continue
            found.append(f"{requirement}: {wheel.name}{via}")
            level += [(d, requirement.name) for d in dependencies(wheel) if applies(d, target)]
    return found, missing


def source_release_missing(wanted: list[Requirement]) -> list[str]:
    """The source builds need PyPI's sdist: one line per requirement that has none."""
    missing = []
    for requirement in wanted:
        if canonicalize_name(requirement.name) not in SOURCE_BUILDS:
            continue
        folder = CACHE / "sdist"
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:", "--progress-bar", "off", "-d", str(folder), str(Requirement(f"{requirement.name}{requirement.specifier}"))],
            capture_output=True, text=True, env=pypi_only_env())
        if result.returncode != 0:
            missing.append(f"no source release on PyPI for {requirement}")
    return missing


def main(argv: list[str]) -> int:
    names = argv or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f"check_wheels: unknown target {unknown[0]}, expected one of {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    wanted = requirements(REPO / "requirements.txt")
    with ThreadPoolExecutor(max_workers=len(names) + 1) as pool:
        sdists = pool.submit(source_release_missing, wanted)
        results = {n: pool.submit(check_target, n, TARGETS[n], wanted) for n in names}
        missing = sdists.result()
        for name, future in results.items():
            found, lacking = future.result()
            print(f"{name}: " + "; ".join(found))
            missing += lacking
    for line in missing:
        print(line, file=sys.stderr)
    print(f"check_wheels: {len(names)} targets, {len(missing)} missing", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
