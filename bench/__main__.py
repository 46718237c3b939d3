"""python -m bench [--quick] [--data DIR ...] [--out bench/results]: measure, print and write
the Markdown report (with plots when matplotlib is installed)."""

from __future__ import annotations

import argparse
import datetime
import platform
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from edge import vad as edge_vad
from edge.errors import EdgeError
from edge.wavio import read_wav_16k

from . import encryption, report
from .detectors import SILERO_ONNX, Detector, OnnxSilero, available_detectors, importable, silero_onnx_path
from .labels import label_file_for, read_speech_intervals, window_truth
from .metrics import RecordingScores, detection_scores, recording_scores, speech_loss
from .recorders import REPO, baseline_segments, edge_process
from .speed import measure_daemon, microseconds_per_window
from .streams import NOISE_TYPES, Stream, TypedStream, build_streams, build_typed_streams

SHARED = REPO.parent / "shared" / "data"
DEFAULT_DATA = [SHARED / "ten-vad-testset-dev", SHARED / "speechocean762-adult"]
SNRS_DB = [20.0, 10.0, 5.0, 0.0]
TIMED_SNR_DB = 10.0  # the stream whose audio the per-window timing and the daemon hear
STREAM_S = 600.0  # each stream, and so each `edge process` input, is at least 10 minutes
TYPED_STREAM_S = 300.0  # each per-noise-type stream (2 speech kinds x 4 noise types x 4 SNRs)
QUICK_STREAM_S = 20.0
SEED = 762
TIMED_WINDOWS = 3000
DAEMON_S = 70.0  # of which the first 10 s (imports, model load, device probing) are not counted
EDGE_PROCESS = "edge process (fp16 TFLite, noise suppression, segmenter)"
BASELINE = "baseline: Silero ONNX + VADIterator"

GOALS = {
    "parity": 0.005,
    "step_ratio": 0.5,
    "rtf": 0.004,
    "daemon_rss_mb": 60.0,
    "daemon_cpu": 0.01,
    "capture_10db": 0.99,
    "non_speech_10db": 0.20,
    # Children's speech in classroom noise (issue 11), on the child-like streams, all noise types.
    "child_capture": {20.0: 0.99, 10.0: 0.99, 5.0: 0.95, 0.0: 0.80},
    "child_clipped_10db": 1 / 50,
}


@dataclass
class Results:
    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    goals: list[tuple[str, str, bool | None]] = field(default_factory=list)

    def goal(self, text: str, measured: str, met: bool | None) -> None:
        self.goals.append((text, measured, met))


def _shown(path: Path) -> str:
    """A path as the reader of the report would type it: relative to the repository if inside."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="one short file, one SNR, one round, no daemon run (a smoke test)")
    parser.add_argument("--data", type=Path, nargs="+", default=None, metavar="DIR",
                        help="folders of WAV files with .scv or .csv speech labels "
                             "(default: ../shared/data/ten-vad-testset-dev and ../shared/data/speechocean762-adult)")
    parser.add_argument("--utterances", type=Path, default=SHARED / "speechocean762-adult", metavar="DIR",
                        help="labelled utterances (.wav + .csv) the classroom streams are built from")
    parser.add_argument("--noise", type=Path, nargs="+", default=[SHARED / "noise"], metavar="DIR",
                        help="folders of noise WAV files mixed under the streams")
    parser.add_argument("--config", type=Path, default=None, metavar="F", help="settings for `edge process`")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", metavar="DIR")
    parser.add_argument("--encryption-only", action="store_true",
                        help="only what encryption at rest costs (edge process and the daemon, off and on)")
    parser.add_argument("--speed-only", action="store_true",
                        help="only the detectors' time per window beside Silero ONNX and the daemon's CPU "
                             "(about 5 minutes)")
    return parser.parse_args(argv)


def labelled_files(data_dirs: list[Path], quick: bool) -> list[tuple[str, Path, Path]]:
    """(data set name, wav, label file) of every labelled WAV; with ``quick`` only the shortest."""
    files = []
    for directory in data_dirs:
        for wav in sorted(directory.glob("*.wav")):
            label = label_file_for(wav)
            if label is not None:
                files.append((directory.name, wav, label))
    if quick and files:
        files = [min(files, key=lambda f: f[1].stat().st_size)]
    return files


def window_accuracy(results: Results, detectors: list[Detector], files) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Adds the accuracy table; returns each detector's pooled (scores, truth)."""
    datasets = list(dict.fromkeys(dataset for dataset, _, _ in files))
    collected = {d.name: {name: ([], []) for name in datasets} for d in detectors}
    for dataset, wav, label in files:
        samples = read_wav_16k(wav)
        speech = read_speech_intervals(label)
        for detector in detectors:
            scores = detector.window_scores(samples)
            scores_list, truth_list = collected[detector.name][dataset]
            scores_list.append(scores)
            truth_list.append(window_truth(speech, len(scores)))
    pooled = {}
    rows = []
    for detector in detectors:
        by_dataset = {name: (np.concatenate(s), np.concatenate(t)) for name, (s, t) in collected[detector.name].items()}
        pooled[detector.name] = tuple(np.concatenate(parts) for parts in zip(*by_dataset.values()))
        total = detection_scores(*pooled[detector.name])
        row = [detector.name, total.precision, total.recall, total.f1, total.average_precision]
        for scores, truth in by_dataset.values():
            part = detection_scores(scores, truth)
            row += [part.f1, part.average_precision]
        rows.append(row)
    window_count = len(next(iter(pooled.values()))[1])
    speech_share = float(np.mean(next(iter(pooled.values()))[1]))
    results.lines += [
        "## Window-level accuracy on labelled real audio",
        "",
        f"{len(files)} files ({', '.join(datasets)}), {window_count} windows of 32 ms, "
        f"{100 * speech_share:.1f} % speech. A window is speech when its centre lies in a labelled "
        "speech interval; P, R and F1 at score >= 0.5, AP = average precision over all thresholds. "
        "WebRTC VAD decides on 30 ms frames; a window's score is the fraction of its 512 samples "
        "inside speech-flagged frames.",
        "",
        *report.table(["detector", "P", "R", "F1", "AP"] + [f"{k} {n}" for n in datasets for k in ("F1", "AP")], rows),
        "",
    ]
    default_rows = [r for r in rows if "[default]" in r[0]]
    reference = next((r for r in rows if r[0] == SILERO_ONNX), None)
    for row in default_rows:
        if reference is None:
            results.goal(f"{row[0]}: F1 and AP within {GOALS['parity']} of Silero ONNX", "no reference", None)
            continue
        f1_gap, ap_gap = row[3] - reference[3], row[4] - reference[4]
        results.goal(f"{row[0]}: F1 and AP within {GOALS['parity']} of Silero ONNX",
                     f"F1 {f1_gap:+.4f}, AP {ap_gap:+.4f}",
                     abs(f1_gap) <= GOALS["parity"] and abs(ap_gap) <= GOALS["parity"])
    return pooled


def recording_row(name: str, stream: Stream, stored) -> tuple[list, RecordingScores]:
    scores = recording_scores(stream.speech, stream.onsets, stored, stream.duration_s)
    return [f"{stream.snr_db:g}", name, f"{100 * scores.speech_capture:.2f} %",
            f"{scores.clipped_onsets}/{scores.utterances}", f"{100 * scores.stored_non_speech:.1f} %",
            f"{scores.segments_per_minute:.1f}"], scores


def classroom_streams(results: Results, args, streams: list[Stream], rounds: int, work: Path):
    """Adds the stream table and the `edge process` speed figures; returns speech capture by
    recorder and SNR."""
    process_runs = []
    for round_number in range(rounds):
        out = work / f"process-{round_number}"
        shutil.rmtree(out, ignore_errors=True)
        stored, run = edge_process([s.path for s in streams], out, args.config)
        shutil.rmtree(out)
        process_runs.append(run)
    onnx_path = silero_onnx_path()
    baseline = None
    if onnx_path is None or not importable("onnxruntime"):
        results.notes.append("No baseline recorder: it needs silero-vad's ONNX file and onnxruntime.")
    else:
        baseline = OnnxSilero(onnx_path)
    rows, capture = [], {EDGE_PROCESS: {}, BASELINE: {}}
    scores_at = {}
    for stream in streams:
        row, scores = recording_row(EDGE_PROCESS, stream, stored.get(str(stream.path), []))
        rows.append(row)
        capture[EDGE_PROCESS][stream.snr_db] = scores.speech_capture
        scores_at[(EDGE_PROCESS, stream.snr_db)] = scores
        if baseline is not None:
            probabilities = edge_vad.window_probabilities(baseline, read_wav_16k(stream.path))
            row, scores = recording_row(BASELINE, stream, baseline_segments(probabilities))
            rows.append(row)
            capture[BASELINE][stream.snr_db] = scores.speech_capture
            scores_at[(BASELINE, stream.snr_db)] = scores
    utterances = len(streams[0].utterances)
    results.lines += [
        "## Classroom-like streams",
        "",
        f"{len(streams)} stream(s) of {streams[0].duration_s / 60:.1f} min: {utterances} speechocean762 "
        "utterances (labels derived from energy on the clean recordings) with pauses of 0.5-3 s, "
        f"seed {SEED}; noise (every noise file except dude_miaowing, equal RMS, looped) mixed at each SNR, "
        f"speech level measured over labelled speech only. Streams and their manifest: `{_shown(work / 'streams')}`. "
        "Speech capture: labelled speech time inside stored segments; clipped onsets: utterances whose "
        "first 100 ms of labelled speech are not all stored; stored non-speech: stored time outside "
        "labelled speech. The baseline is Silero's VADIterator (threshold 0.5, end below 0.35, "
        "min_silence 100 ms, speech_pad 30 ms, no pre-roll) on the ONNX model.",
        "",
        *report.table(["SNR dB", "recorder", "speech capture", "clipped onsets", "stored non-speech",
                       "segments/min"], rows),
        "",
    ]
    ours, theirs = scores_at.get((EDGE_PROCESS, 10.0)), scores_at.get((BASELINE, 10.0))
    if ours is not None:
        if theirs is None:
            results.notes.append("Without the baseline, 'better than the baseline' is not judged.")
        results.goal(f"speech capture at 10 dB >= {100 * GOALS['capture_10db']:.0f} % and above the baseline",
                     f"{100 * ours.speech_capture:.2f} %"
                     + ("" if theirs is None else f" (baseline {100 * theirs.speech_capture:.2f} %)"),
                     ours.speech_capture >= GOALS["capture_10db"]
                     and (theirs is None or ours.speech_capture > theirs.speech_capture))
        results.goal(f"stored non-speech at 10 dB <= {100 * GOALS['non_speech_10db']:.0f} % and below the baseline",
                     f"{100 * ours.stored_non_speech:.1f} %"
                     + ("" if theirs is None else f" (baseline {100 * theirs.stored_non_speech:.1f} %)"),
                     ours.stored_non_speech <= GOALS["non_speech_10db"]
                     and (theirs is None or ours.stored_non_speech < theirs.stored_non_speech))
    return capture, process_runs


def speed_section(results: Results, detectors: list[Detector], streams: list[Stream], process_runs,
                  rounds: int, daemon_work: Path | None) -> None:
    streaming = {d.name: d.streaming for d in detectors if d.streaming is not None}
    timed_stream = read_wav_16k(next(s for s in streams if s.snr_db == TIMED_SNR_DB).path)
    timed_audio = timed_stream[: TIMED_WINDOWS * 512]
    micro = microseconds_per_window(streaming, timed_audio, rounds)
    reference = micro.get(SILERO_ONNX)
    rows = [[name, f"{us:.1f}", f"{us / reference:.2f}" if reference else "-"] for name, us in micro.items()]
    results.lines += [
        "## Speed and memory",
        "",
        f"One thread each, detectors interleaved in one process, median of {rounds} round(s) of "
        f"{len(timed_audio) // 512} windows.",
        "",
        *report.table(["detector", "µs per 32 ms window", "× Silero ONNX"], rows),
        "",
    ]
    for name, us in micro.items():
        # The models alone, and the detector the recorder runs (the model behind the suppressor).
        if ("[default]" in name or "[recorder]" in name) and reference:
            results.goal(f"{name}: VAD step <= {GOALS['step_ratio']} × Silero onnxruntime",
                         f"{us:.1f} µs vs {reference:.1f} µs ({us / reference:.2f}×)",
                         us <= GOALS["step_ratio"] * reference)
    if process_runs:
        audio_s = sum(s.duration_s for s in streams)
        rtf = statistics.median(run.wall_s / audio_s for run in process_runs)
        cpu_rtf = statistics.median(run.cpu_s / audio_s for run in process_runs)
        process_rss = max(run.peak_rss_mb for run in process_runs)
        results.lines.append(
            f"- `edge process` on {len(streams)} stream(s), {audio_s / 60:.1f} min of audio, median of {rounds} "
            f"run(s), including start-up: real-time factor {rtf:.4f} (wall), {cpu_rtf:.4f} (CPU); "
            f"peak RSS {process_rss:.1f} MB.")
        results.goal(f"edge process real-time factor <= {GOALS['rtf']}", f"{rtf:.4f}", rtf <= GOALS["rtf"])
    if daemon_work is None:
        results.lines += ["- Daemon not measured (--quick).", ""]
        return
    try:
        daemon = measure_daemon(timed_stream, DAEMON_S, daemon_work)
        unsuppressed = measure_daemon(timed_stream, DAEMON_S, daemon_work, sections={"denoise": {"enabled": False}})
    except (RuntimeError, OSError, EdgeError) as exc:
        results.lines += [f"- Daemon could not be measured: {exc}", ""]
        return
    results.lines += [
        f"- `edge run` (the daemon) capturing through ALSA's file plugin from a FIFO fed at real time "
        f"({daemon.audio_fed_s:.0f} s of audio in {daemon.seconds:.0f} s, the FIFO opened "
        f"{daemon.feeder_opens} time(s), {daemon.segments} segment(s) stored): CPU "
        f"{100 * daemon.cpu_share:.2f} % of one core (after {daemon.warmup_s:.0f} s warm-up; "
        f"{100 * unsuppressed.cpu_share:.2f} % without noise suppression, measured right after), "
        f"memory of the daemon and its capture process: {daemon.pss_mb:.1f} MB PSS "
        f"(peak RSS {daemon.peak_rss_mb:.1f} MB added up, the interpreter's shared pages counted twice).",
        "",
    ]
    results.goal(f"daemon memory (PSS, with its capture process) <= {GOALS['daemon_rss_mb']:.0f} MB",
                 f"{daemon.pss_mb:.1f} MB", daemon.pss_mb <= GOALS["daemon_rss_mb"])
    results.goal(f"daemon CPU <= {100 * GOALS['daemon_cpu']:.0f} % of one core at real time",
                 f"{100 * daemon.cpu_share:.2f} %", daemon.cpu_share <= GOALS["daemon_cpu"])


def typed_rows(streams: list[TypedStream], stored: dict, baseline) -> list[list]:
    """One row per noise type and SNR (and a row over all types per SNR): the recorder's
    scores, where its lost speech lies, and the baseline's scores."""
    rows = []
    snrs = sorted({s.snr_db for s in streams}, reverse=True)
    for noise_type in [*NOISE_TYPES, "all"]:
        for snr in snrs:
            chosen = [s for s in streams if s.snr_db == snr and noise_type in ("all", s.noise_type)]
            if not chosen:
                continue
            ours = pooled_scores(chosen, lambda s: stored.get(str(s.path), []))
            row = [noise_type, f"{snr:g}", *ours]
            if baseline is not None:
                row += pooled_scores(chosen, lambda s: baseline_segments(
                    edge_vad.window_probabilities(baseline, read_wav_16k(s.path))))[:3]
            rows.append(row)
    return rows


def pooled_scores(streams: list[Stream], stored_of) -> list[str]:
    """Speech capture, clipped onsets, stored non-speech and lost speech (missed utterances /
    heads / tails / inside) over several streams together."""
    speech = captured = stored_time = lost_missed = lost_heads = lost_tails = 0.0
    clipped = onsets = 0
    for stream in streams:
        stored = stored_of(stream)
        scores = recording_scores(stream.speech, stream.onsets, stored, stream.duration_s)
        loss = speech_loss([u.speech for u in stream.utterances if u.speech], stored)
        length = sum(e - s for s, e in stream.speech)
        speech += length
        captured += scores.speech_capture * length
        kept = sum(e - s for s, e in stored)
        stored_time += kept
        clipped, onsets = clipped + scores.clipped_onsets, onsets + scores.utterances
        lost_missed += loss.missed * length
        lost_heads += loss.heads * length
        lost_tails += loss.tails * length
    non_speech = (stored_time - captured) / stored_time if stored_time else 0.0
    return [f"{100 * captured / speech:.2f} %", f"{clipped}/{onsets}", f"{100 * non_speech:.1f} %",
            f"{100 * lost_missed / speech:.2f} / {100 * lost_heads / speech:.2f} / {100 * lost_tails / speech:.2f}"]


# What the default recorder is compared with on the same per-noise-type streams: one change each.
VARIANTS = {
    "no noise suppression": {"denoise": {"enabled": False}},
    # edge process runs in the repository (bench/recorders.py), so the path is relative to it.
    "int8 model": {"detector": {"model": "models/silero_vad_int8.tflite"}},
}


def variant_comparison(results: Results, args, streams: list[TypedStream], work: Path, default_rows: dict) -> None:
    """The same streams with each of VARIANTS applied to the config, pooled over noise types,
    beside the default recorder."""
    base = (yaml.safe_load(args.config.read_text()) if args.config else None) or {}
    variant_rows = {}
    for name, change in VARIANTS.items():
        config = {section: dict(base.get(section) or {}) for section in base}
        for section, values in change.items():
            config.setdefault(section, {}).update(values)
        path = work / "variant.yaml"
        path.write_text(yaml.safe_dump(config))
        out = work / "process-typed-variant"
        shutil.rmtree(out, ignore_errors=True)
        stored, _ = edge_process([s.path for s in streams], out, path)
        shutil.rmtree(out)
        variant_rows[name] = {kind: [row for row in typed_rows([s for s in streams if s.speech_kind == kind], stored, None)
                                     if row[0] == "all"] for kind in ("adult", "child-like")}
    rows = []
    for kind in ("adult", "child-like"):
        for index, ours in enumerate(default_rows[kind]):
            rows.append([kind, ours[1], *ours[2:5], *(cell for name in VARIANTS for cell in variant_rows[name][kind][index][2:5])])
    header = ["speech", "SNR dB", "default capture", "default clipped", "default non-speech"]
    header += [f"{name}: {column}" for name in VARIANTS for column in ("capture", "clipped", "non-speech")]
    results.lines += [
        "### The default recorder beside one change each, all noise types", "",
        "Default: fp16 model behind the noise suppressor (`denoise.enabled: true`). Each other group of "
        "columns changes one thing: " + "; ".join(f"{name} (`{yaml.safe_dump(change, default_flow_style=True).strip()}`)"
                                                  for name, change in VARIANTS.items()) + ".", "",
        *report.table(header, rows), "",
    ]


def typed_section(results: Results, args, streams: list[TypedStream], work: Path) -> None:
    out = work / "process-typed"
    shutil.rmtree(out, ignore_errors=True)
    stored, _ = edge_process([s.path for s in streams], out, args.config)
    shutil.rmtree(out)
    onnx_path = silero_onnx_path()
    baseline = OnnxSilero(onnx_path) if onnx_path is not None and importable("onnxruntime") else None
    header = ["noise", "SNR dB", "speech capture", "clipped onsets", "stored non-speech",
              "lost % (missed / heads / tails)"]
    if baseline is not None:
        header += ["baseline capture", "baseline clipped", "baseline non-speech"]
    minutes = streams[0].duration_s / 60
    results.lines += [
        "## Per noise type: adult and child-like speech",
        "",
        f"Streams of {minutes:.1f} min per speech kind, noise type and SNR (seed {SEED}, split \"report\"): "
        "the foreground is spoken by one half of the 20 speechocean762 speakers, the babble (20 talkers "
        "overlapping) by the other half; transients are the clatter of doing_the_dishes gated to its loud "
        "moments; music is half of noise/music-instrumental; stationary is half of the ambient, bike and tap "
        "recordings (bench/streams.py). Child-like utterances are 0.4-1.6 s pieces of those sentences, "
        "raised 1.2-1.3x in pitch and formants by resampling, 0-9 dB softer, with 20-150 ms faded-in onsets. "
        "Lost % splits the speech not stored into utterances never stored, heads before the first stored "
        "sample of an utterance, and tails after its last (the rest is inside). \"all\" pools the four "
        "noise types. Baseline: Silero ONNX + VADIterator as above.",
        "",
    ]
    model_rows: dict[str, list] = {}
    for kind in ("adult", "child-like"):
        chosen = [s for s in streams if s.speech_kind == kind]
        rows = typed_rows(chosen, stored, baseline)
        results.lines += [f"### {kind}", "", *report.table(header, rows), ""]
        model_rows[kind] = [row for row in rows if row[0] == "all"]
        if kind != "child-like":
            continue
        for row in rows:
            if row[0] != "all":
                continue
            snr = float(row[1])
            goal = GOALS["child_capture"].get(snr)
            if goal is not None:
                results.goal(f"child-like, all noise types: speech capture at {snr:g} dB >= {100 * goal:g} %",
                             row[2], float(row[2].split()[0]) >= 100 * goal)
            if snr == TIMED_SNR_DB:
                clipped, onsets = map(int, row[3].split("/"))
                results.goal(f"child-like at 10 dB: clipped onsets <= 1 in {1 / GOALS['child_clipped_10db']:.0f}",
                             row[3], clipped <= onsets * GOALS["child_clipped_10db"])
                results.goal(f"child-like at 10 dB: stored non-speech <= {100 * GOALS['non_speech_10db']:.0f} %",
                             row[4], float(row[4].split()[0]) <= 100 * GOALS["non_speech_10db"])
    variant_comparison(results, args, streams, work, model_rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    rounds = 1 if quick else 3
    results = Results()
    today = datetime.date.today().isoformat()
    stem = (f"{today}-{platform.node().split('.')[0]}" + ("-quick" if quick else "")
            + ("-encryption" if args.encryption_only else "") + ("-speed" if args.speed_only else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "tmp"
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    results.lines += [f"# edge-recorder benchmark, {today}", "", f"Command: `{command.strip()}`", "",
                      *report.machine_lines(), ""]

    detectors = [] if args.encryption_only else available_detectors(results.notes)
    if args.speed_only:
        streams = build_streams(args.utterances, [d for d in args.noise if d.is_dir()], [TIMED_SNR_DB],
                                STREAM_S, work / "streams", SEED)
        speed_section(results, detectors, streams, [], rounds, work / "daemon")
        return finish(results, args.out / f"{stem}.md")
    files = [] if args.encryption_only else labelled_files(args.data or [d for d in DEFAULT_DATA if d.is_dir()], quick)
    pooled = window_accuracy(results, detectors, files) if files and detectors else {}
    if not files and not args.encryption_only:
        results.notes.append("No labelled data found: window-level accuracy skipped (pass --data DIR).")

    plt = report.pyplot()
    if plt is None:
        results.notes.append("matplotlib is not installed: no plots.")
    elif pooled:
        plot = args.out / f"{stem}-precision-recall.png"
        report.plot_precision_recall(pooled, plot)
        results.lines += [f"![precision-recall]({plot.name})", ""]

    noise_dirs = [d for d in args.noise if d.is_dir()]
    if not args.utterances.is_dir() or not noise_dirs:
        results.notes.append("No utterance or noise folder: classroom streams and speed of `edge process` skipped.")
    else:
        streams = build_streams(args.utterances, noise_dirs,
                                [TIMED_SNR_DB] if quick or args.encryption_only else SNRS_DB,
                                QUICK_STREAM_S if quick else STREAM_S, work / "streams", SEED)
        if not args.encryption_only:
            capture, process_runs = classroom_streams(results, args, streams, rounds, work)
            if plt is not None:
                plot = args.out / f"{stem}-capture-vs-snr.png"
                report.plot_capture_vs_snr({k: v for k, v in capture.items() if v}, plot)
                results.lines += [f"![speech capture vs SNR]({plot.name})", ""]
            speed_section(results, detectors, streams, process_runs, rounds, None if quick else work / "daemon")
            typed = build_typed_streams(args.utterances, noise_dirs[0], [TIMED_SNR_DB] if quick else SNRS_DB,
                                        QUICK_STREAM_S if quick else TYPED_STREAM_S, work / "typed", SEED)
            typed_section(results, args, typed, work)
        timed = next(s for s in streams if s.snr_db == TIMED_SNR_DB)
        encryption.section(results, timed.path, read_wav_16k(timed.path), timed.duration_s,
                           work / "encryption", args.config, rounds, None if quick else DAEMON_S)

    return finish(results, args.out / f"{stem}.md")


def finish(results: Results, report_path: Path) -> int:
    """The goals and notes after the sections; the report printed and written."""
    results.lines += ["## Goals", "", *report.table(
        ["goal", "measured", "met"],
        [[text, measured, {True: "yes", False: "**no**", None: "not measured"}[met]]
         for text, measured, met in results.goals]), ""]
    if results.notes:
        results.lines += ["## Notes", "", *(f"- {note}" for note in results.notes), ""]
    text = "\n".join(results.lines)
    print(text)
    report_path.write_text(text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EdgeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(2)
