"""The documentation cannot drift from the code: the configuration reference and
config/edge.yaml's commentary agree with the settings dataclasses, and every relative link
in README.md and docs/ leads somewhere."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import yaml

from edge import configdoc
from edge.config import DEFAULT_CONFIG, AudioSettings

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_the_configuration_reference_is_generated_from_the_dataclasses():
    result = subprocess.run([sys.executable, "-m", "edge.configdoc", "--check"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    reference = (REPO / "docs" / "configuration.md").read_text()
    for key in configdoc.keys():
        assert f"| `{key.name}` | `{configdoc.yaml_value(key.default)}` |" in reference


def test_the_check_fails_on_a_table_edited_by_hand(tmp_path):
    copy = tmp_path / "configuration.md"
    copy.write_text(configdoc.render((REPO / "docs" / "configuration.md").read_text()).replace("| `800` |", "| `500` |"))
    result = subprocess.run([sys.executable, "-m", "edge.configdoc", "--check", str(copy)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 1 and "python -m edge.configdoc" in result.stderr


def yaml_keys(path: Path) -> dict[str, tuple[object, str]]:
    """section.key -> (value, comment) of a config written as config/edge.yaml is: sections at
    the margin, their keys indented, each key on one line with its comment after `#`."""
    values = yaml.safe_load(path.read_text())
    found, section = {}, None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name = line.split(":", 1)[0].strip()
        if not line.startswith(" "):
            section = name
            continue
        key = f"{section}.{name}"
        assert key not in found, f"{path.name}:{number}: {key} twice"
        found[key] = (values[section][name], line.partition("#")[2].strip())
    return found


def test_config_yaml_lists_every_key_with_its_default_and_a_comment_true_to_its_docstring():
    listed = yaml_keys(DEFAULT_CONFIG)
    documented = {key.name: key for key in configdoc.keys()}
    assert sorted(listed) == sorted(documented), "config/edge.yaml and edge/config.py list different keys"
    for name, (value, comment) in listed.items():
        key = documented[name]
        default = list(key.default) if isinstance(key.default, tuple) else key.default
        if isinstance(default, bool) or default is None:
            same = value is default
        else:
            same = value == default and not isinstance(value, bool)
        assert same, f"config/edge.yaml: {name} is {value!r}, its default is {key.default!r}"
        assert comment, f"config/edge.yaml: {name} has no comment"
        if key.unit:
            assert key.unit.lower() in comment.lower(), f"config/edge.yaml: {name}'s comment does not name its unit ({key.unit})"
        if "null" in key.meaning:
            assert "null" in comment, f"config/edge.yaml: {name}'s comment does not say what null means"
        for choice in re.findall(r"`(\w+)`", key.allowed):
            assert choice in comment, f"config/edge.yaml: {name}'s comment does not name {choice}"


@dataclasses.dataclass(frozen=True)
class ButtonLike:
    pin: Optional[int] = dataclasses.field(default=None, metadata={"range": (0, 53)})
    """GPIO pin of a button (BCM numbering); null for none."""
    hold_s: float = 3.0
    """How long a press lasts to count as long, in seconds."""


@dataclasses.dataclass(frozen=True)
class WithButton:
    audio: AudioSettings = AudioSettings()
    controls: ButtonLike = ButtonLike()


def test_a_new_settings_section_is_picked_up_without_a_change_to_the_generator():
    found = {key.name: key for key in configdoc.keys(WithButton)}
    assert found["controls.hold_s"].unit == "seconds"
    assert found["controls.pin"].kind == "whole number or null" and found["controls.pin"].allowed == "0 to 53"
    assert "audio.device" in found


# [text](target) outside code; images too. Targets with a scheme (https:, mailto:) are not ours to check.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces to -."""
    names = set()
    for heading in re.findall(r"^#+\s+(.*)$", strip_code(page.read_text()), re.MULTILINE):
        names.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return names


def strip_code(text: str) -> str:
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(strip_code(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{page.relative_to(REPO)}: {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{page.relative_to(REPO)}: {target}: no heading #{anchor}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_the_link_check_sees_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "a.md").write_text("# Top part\n[ok](#top-part) [file](b.md) [gone](c.md) [far](b.md#nowhere)\n"
                                   "`[code](d.md)` [web](https://example.org)\n")
    (tmp_path / "b.md").write_text("# B\n")
    global REPO
    saved, REPO = REPO, tmp_path
    try:
        assert broken_links(tmp_path / "a.md") == ["a.md: c.md: no such file", "a.md: b.md#nowhere: no heading #nowhere"]
    finally:
        REPO = saved


def test_readme_is_one_page_and_docs_has_an_index_of_every_file():
    assert len((REPO / "README.md").read_bytes()) < 12 * 1024
    index = (REPO / "docs" / "README.md").read_text()
    for page in (REPO / "docs").glob("*.md"):
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not list {page.name}"


def led_drawing(timing: tuple[float, ...] | None, seconds: float = 4.0, cell: float = 0.1) -> str:
    """Four seconds of a blink pattern (seconds on, off, on, off...), one character per 0.1 s:
    lit (█), half lit (▌), dark (·)."""

    def is_lit(t: float) -> bool:
        t %= sum(timing)
        for step, length in enumerate(timing):
            if t < length:
                return step % 2 == 0
            t -= length
        return False

    drawing = ""
    for index in range(round(seconds / cell)):
        lit = 0.0
        if timing is not None:
            samples = [(index + (k + 0.5) / 100) * cell for k in range(100)]
            lit = sum(is_lit(t) for t in samples) / 100
        drawing += "█" if lit >= 0.75 else "▌" if lit >= 0.25 else "·"
    return drawing


def test_the_readme_draws_every_led_pattern_as_the_indicator_blinks_it():
    from edge.indicator import LedPattern

    drawn = re.findall(r"^\s*\| `([█▌·]+)` [^|]*\| ([^|]+) \|$", (REPO / "README.md").read_text(), re.MULTILINE)
    drawings = [drawing for drawing, _ in drawn]
    for pattern in LedPattern:
        assert led_drawing(pattern.value) in drawings, f"README.md's LED table does not draw {pattern.name} {pattern.value}"
    assert len(drawings) == len(set(drawings)) == len(LedPattern), "README.md's LED table has a pattern edge/indicator.py lacks"
