"""The Markdown report and its plots."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

import numpy as np

from .metrics import precision_recall_curve

PACKAGES = ("numpy", "tflite-runtime", "ai-edge-litert", "onnxruntime", "silero-vad", "webrtcvad-wheels",
            "matplotlib")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def machine_lines() -> list[str]:
    return [
        f"- Machine: {platform.node()}, {cpu_model()}, {os.cpu_count()} cores, {platform.machine()}, "
        f"{platform.system()} {platform.release()}",
        "- Versions: " + ", ".join(f"{name} {version}" for name, version in versions().items()),
    ]


def table(header: list[str], rows: list[list]) -> list[str]:
    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
    ]


def pyplot():
    """matplotlib's pyplot on a file-only backend, or None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_precision_recall(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """``curves``: detector name -> (scores, truth) pooled over all labelled files."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 5))
    for name, (scores, truth) in curves.items():
        precision, recall = precision_recall_curve(scores, truth)
        axes.plot(recall, precision, label=name, drawstyle="steps-post")
    axes.set(xlabel="recall (32 ms windows)", ylabel="precision", xlim=(0, 1.01), ylim=(0.5, 1.01),
             title="Precision-recall, labelled real audio")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_capture_vs_snr(capture: dict[str, dict[float, float]], path: Path) -> None:
    """``capture``: recorder name -> {SNR dB: speech capture}."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, by_snr in capture.items():
        snrs = sorted(by_snr)
        axes.plot(snrs, [100 * by_snr[s] for s in snrs], marker="o", label=name)
    axes.axhline(99, color="grey", linestyle=":", label="goal at 10 dB: 99 %")
    axes.set(xlabel="SNR (dB)", ylabel="speech capture (%)", title="Speech kept in stored segments")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
