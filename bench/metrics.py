"""Window-level detection scores and segment-level recording scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .labels import Intervals


@dataclass(frozen=True)
class DetectionScores:
    precision: float
    recall: float
    f1: float
    average_precision: float


def precision_recall_f1(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of boolean window decisions; 0 where undefined."""
    true_positives = int(np.sum(predicted & truth))
    predicted_count = int(np.sum(predicted))
    truth_count = int(np.sum(truth))
    precision = true_positives / predicted_count if predicted_count else 0.0
    recall = true_positives / truth_count if truth_count else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def precision_recall_curve(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall with the threshold at each distinct score, highest first
    (a window is speech when its score is >= the threshold)."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    true_positives = np.cumsum(truth[order])
    # The last index of each run of equal scores: tied windows are decided together.
    last_of_tie = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(scores) - 1]
    tp = true_positives[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall = tp / max(int(np.sum(truth)), 1)
    return precision, recall


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Sum over thresholds of precision times the recall gained (the step-wise area under the
    precision-recall curve, as scikit-learn's average_precision_score)."""
    precision, recall = precision_recall_curve(scores, truth)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def detection_scores(scores: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> DetectionScores:
    return DetectionScores(*precision_recall_f1(scores >= threshold, truth), average_precision(scores, truth))


def merge_intervals(intervals: Intervals) -> Intervals:
    """Sorted, non-overlapping union of intervals."""
    merged: Intervals = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        elif end > start:
            merged.append((start, end))
    return merged


def total_length(intervals: Intervals) -> float:
    return sum(end - start for start, end in merge_intervals(intervals))


def overlap_length(a: Intervals, b: Intervals) -> float:
    """Length of the intersection of two sets of intervals."""
    total = 0.0
    for a_start, a_end in merge_intervals(a):
        for b_start, b_end in merge_intervals(b):
            total += max(0.0, min(a_end, b_end) - max(a_start, b_start))
    return total


@dataclass(frozen=True)
class RecordingScores:
    speech_capture: float
    """Fraction of labelled speech time inside stored segments."""
    clipped_onsets: int
    """Utterances whose first ONSET_S of labelled speech is not wholly stored."""
    utterances: int
    stored_non_speech: float
    """Fraction of stored time that is not labelled speech."""
    segments_per_minute: float


ONSET_S = 0.1
# Segment bounds are sample-exact and labels are in 10 ms steps: a microsecond less is rounding.
TOLERANCE_S = 1e-6


def recording_scores(
    speech: Intervals, utterance_onsets: list[float], stored: Intervals, duration_s: float
) -> RecordingScores:
    """How well ``stored`` segments keep the labelled ``speech`` of a stream of ``duration_s``;
    ``utterance_onsets`` are the starts of each utterance's first labelled speech."""
    speech_time = total_length(speech)
    stored_time = total_length(stored)
    captured = overlap_length(speech, stored)
    clipped = sum(
        overlap_length([(onset, onset + ONSET_S)], stored) < ONSET_S - TOLERANCE_S for onset in utterance_onsets
    )
    return RecordingScores(
        speech_capture=captured / speech_time if speech_time else 0.0,
        clipped_onsets=clipped,
        utterances=len(utterance_onsets),
        stored_non_speech=(stored_time - captured) / stored_time if stored_time else 0.0,
        segments_per_minute=len(stored) / (duration_s / 60),
    )


@dataclass(frozen=True)
class SpeechLoss:
    """Where labelled speech that was not stored lies, as fractions of all labelled speech."""

    missed: float
    """In utterances of which nothing was stored (never triggered)."""
    heads: float
    """Before the first stored part of an utterance (clipped onsets)."""
    tails: float
    """After the last stored part of an utterance (clipped ends)."""
    inside: float
    """Between stored parts of one utterance."""


def speech_loss(utterances: list[Intervals], stored: Intervals) -> SpeechLoss:
    """``utterances``: each utterance's labelled speech intervals."""
    stored = merge_intervals(stored)
    total = sum(total_length(u) for u in utterances)
    missed = heads = tails = inside = 0.0
    for speech in utterances:
        lost = total_length(speech) - overlap_length(speech, stored)
        kept = [(max(s, speech[0][0]), min(e, speech[-1][1])) for s, e in stored
                if overlap_length(speech, [(s, e)]) > 0] if speech else []
        if not kept:
            missed += lost
            continue
        head = total_length(speech) - overlap_length(speech, [(kept[0][0], speech[-1][1])])
        tail = total_length(speech) - overlap_length(speech, [(speech[0][0], kept[-1][1])])
        heads, tails, inside = heads + head, tails + tail, inside + lost - head - tail
    scale = 1 / total if total else 0.0
    return SpeechLoss(missed * scale, heads * scale, tails * scale, inside * scale)
