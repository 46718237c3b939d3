"""Classroom speech recorder: ALSA microphone -> stateful VAD -> speech-only WAV segments."""

__version__ = "0.1.0"
