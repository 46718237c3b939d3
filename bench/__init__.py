"""`make bench`: how well and how fast the recorder detects speech, against Silero's own ONNX
model and WebRTC VAD, on labelled real audio and on noisy classroom-like streams.

Run ``python -m bench --help``. Comparison packages (onnxruntime, webrtcvad, matplotlib) are
optional: whatever is missing is skipped with a note in the report.
"""
