"""Rebuild tests/data/lesson_15s.wav and its labels from ../shared/data (run from the repo root).

Three speechocean762 utterances (CC BY 4.0) separated by room tone from the recorded-ambient
air conditioner (MIT), scaled to each utterance's own noise floor so the pauses sound like the
room the speech was recorded in.
"""

import csv
from pathlib import Path

import numpy as np

from edge.wavio import read_wav_16k, write_wav_16k

SHARED = Path("../shared/data")
UTTERANCES = ["000240010", "011090011", "020160042"]
GAPS_S = [1.0, 2.0, 2.0, 1.0]
RATE = 16000


def main() -> None:
    ambient = read_wav_16k(SHARED / "noise/recorded-ambient/air_conditioner.wav").astype(np.float64)
    parts, labels, t = [], [], 0.0
    cursor = 0
    for index, gap in enumerate(GAPS_S):
        floor_rms = 30.0
        if index < len(UTTERANCES):
            name = UTTERANCES[index]
            rows = list(csv.DictReader(open(SHARED / f"speechocean762-adult/{name}.csv")))
            speech = read_wav_16k(SHARED / f"speechocean762-adult/{name}.wav")
            lead = speech[: int(float(rows[0]["end_s"]) * RATE)].astype(np.float64)
            floor_rms = float(np.sqrt(np.mean(lead**2))) if len(lead) else floor_rms
        n = int(gap * RATE)
        tone = ambient[np.arange(cursor, cursor + n) % len(ambient)]  # the recording is 4.2 s: loop it
        cursor += n
        parts.append(np.round(tone * floor_rms / np.sqrt(np.mean(tone**2))).astype(np.int16))
        t += gap
        if index < len(UTTERANCES):
            parts.append(speech)
            labels += [(t + float(r["start_s"]), t + float(r["end_s"])) for r in rows if r["label"] == "1"]
            t += len(speech) / RATE
    audio = np.concatenate(parts)
    write_wav_16k("tests/data/lesson_15s.wav", audio)
    with open("tests/data/lesson_15s.csv", "w") as f:
        f.write("start_s,end_s,label\n")
        f.writelines(f"{s:.3f},{e:.3f},1\n" for s, e in labels)
    print(f"{len(audio) / RATE:.2f} s, speech {labels}")


if __name__ == "__main__":
    main()
