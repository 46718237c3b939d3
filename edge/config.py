"""Settings: one frozen dataclass per concern, loaded from YAML.

Unknown keys, wrong types and out-of-range values are refused with one line that names the
file, the key and what is expected, because a typo in a config that nobody watches would
otherwise silently run the defaults for weeks.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import typing
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import EdgeError, permission_denied, printable, shown

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PACKAGE_ROOT / "config" / "edge.yaml"
# Where `make install` puts the service's config: every command reads it when it exists, so
# `edge status` or `edge export` on the Pi need no --config.
SYSTEM_CONFIG = Path("/etc/edge-recorder/edge.yaml")


def bounded(low: float | None = None, high: float | None = None) -> dict:
    return {"range": (low, high)}


def one_of(*choices: str) -> dict:
    return {"choices": choices}


@dataclass(frozen=True)
class AudioSettings:
    device: str = "default"
    """ALSA capture device: a PCM name (`default`, `plughw:CARD=Device,DEV=0`) or a substring of the PortAudio device name."""
    capture_rate: Optional[int] = field(default=None, metadata=bounded(8000, 192000))
    """Capture sample rate in Hz; null takes 16000 when the device offers it, else the device's default rate, resampled to 16 kHz."""
    buffer_s: float = field(default=10.0, metadata=bounded(0.5, 120))
    """Audio held between the capture thread and the detector before frames are dropped and counted, in seconds."""
    stall_timeout_s: float = field(default=2.0, metadata=bounded(0.2, 60))
    """Seconds without any audio after which the microphone counts as lost and is reopened."""
    reopen_backoff_s: float = field(default=1.0, metadata=bounded(0.05, 60))
    """First wait before reopening a lost microphone, in seconds; doubles after each failed attempt."""
    reopen_backoff_max_s: float = field(default=30.0, metadata=bounded(0.05, 3600))
    """Longest wait between attempts to reopen a lost microphone, in seconds."""
    open_timeout_s: float = field(default=10.0, metadata=bounded(1, 15))
    """Seconds an attempt to open the microphone may take before it counts as failed (at most 15: the service's watchdog waits 30 s, its stop 20 s)."""


@dataclass(frozen=True)
class DetectorSettings:
    model: Optional[str] = None
    """Path of the .tflite voice-activity model; null uses the bundled fp16 Silero model."""
    threshold: float = field(default=0.5, metadata=bounded(0.0, 1.0))
    """Speech probability (0-1) at or above which speech starts."""
    neg_threshold: Optional[float] = field(default=None, metadata=bounded(0.0, 1.0))
    """Speech probability (0-1) below which speech may end; null means threshold - 0.15."""


@dataclass(frozen=True)
class DenoiseSettings:
    enabled: bool = True
    """Whether the detector hears the audio with its steady background noise turned down (stored audio is never changed)."""
    max_attenuation_db: float = field(default=15.0, metadata=bounded(0.0, 40.0))
    """Most a frequency of the detector's input is turned down where it holds only noise, in dB."""
    noise_window_s: float = field(default=0.5, metadata=bounded(0.1, 10.0))
    """A frequency whose power stays up for this long counts as noise (its lowest power over this time is the noise), in seconds."""


@dataclass(frozen=True)
class SegmenterSettings:
    min_speech_ms: int = field(default=96, metadata=bounded(0, 10000))
    """Speech shorter than this is a blip and is not stored, in milliseconds."""
    min_silence_ms: int = field(default=800, metadata=bounded(0, 60000))
    """Pauses shorter than this stay inside one segment, in milliseconds."""
    pre_roll_ms: int = field(default=640, metadata=bounded(0, 10000))
    """Most audio kept from before the detector was sure speech began (searched back for the onset), in milliseconds."""
    post_roll_ms: int = field(default=256, metadata=bounded(0, 10000))
    """Most audio kept after speech ended (as far as speech-like windows go on), in milliseconds."""
    speech_like_prob: float = field(default=0.15, metadata=bounded(0.0, 1.0))
    """Speech probability (0-1) at or above which a window next to speech counts as part of it (onset and end search)."""
    speech_like_rise_db: float = field(default=6.0, metadata=bounded(0.0, 60.0))
    """Level above the noise floor at which a window next to speech counts as part of it, in dB."""
    speech_bridge_ms: int = field(default=224, metadata=bounded(0, 10000))
    """Quieter gaps shorter than this between speech-like windows are part of the speech, in milliseconds."""
    onset_margin_ms: Optional[int] = field(default=None, metadata=bounded(0, 10000))
    """Audio kept before the searched start of speech, in milliseconds; null keeps the whole pre-roll (no search)."""
    tail_margin_ms: Optional[int] = field(default=160, metadata=bounded(0, 10000))
    """Audio kept after the searched end of speech, in milliseconds; null keeps the whole post-roll (no search)."""
    adaptive_threshold_min: Optional[float] = field(default=0.2, metadata=bounded(0.0, 1.0))
    """Lowest start threshold (speech probability 0-1) while the background probability is low; null keeps detector.threshold."""
    adaptive_threshold_margin: float = field(default=0.2, metadata=bounded(0.0, 1.0))
    """How far above the background speech probability (0-1) the start threshold stays."""
    background_s: float = field(default=10.0, metadata=bounded(0.1, 3600))
    """Time over which the background speech probability is averaged, in seconds."""
    noise_floor_rise_db_per_s: float = field(default=3.0, metadata=bounded(0.01, 100.0))
    """How fast the tracked background level may rise (it falls at once), in dB per second."""
    max_segment_s: float = field(default=300.0, metadata=bounded(5, 86400))
    """Longest segment before it is split at the quietest recent window, in seconds."""


@dataclass(frozen=True)
class StorageSettings:
    recordings_dir: str = "recordings"
    """Folder for segments and manifest.jsonl; relative paths are under $STATE_DIRECTORY when systemd sets it, else the working directory."""
    device_name: Optional[str] = None
    """Name of this recorder in file names and the manifest; null uses the host name."""
    min_free_mb: int = field(default=200, metadata=bounded(0, 10**7))
    """Free space on the card below which no more audio is written, in megabytes."""
    when_full: str = field(default="stop", metadata=one_of("stop", "delete_oldest"))
    """At the free-space floor: `stop` writing (keeps every recording) or `delete_oldest` segments."""
    fsync_interval_s: float = field(default=1.0, metadata=bounded(0.032, 60))
    """How much audio of an open segment a power cut may lose at most, in seconds."""
    keep_days: Optional[float] = field(default=None, metadata=bounded(0.001, 36500))
    """Segments older than this many days (by recording time) are deleted; null keeps them until exported."""


@dataclass(frozen=True)
class LedSettings:
    pin: Optional[int] = field(default=17, metadata=bounded(0, 53))
    """GPIO pin of the LED (BCM numbering); null for no LED."""
    active_high: bool = True
    """True when the pin drives the LED's anode (on = high)."""
    heartbeat: bool = True
    """Blink briefly every few seconds while listening, so a glance shows the recorder is alive."""


@dataclass(frozen=True)
class ControlsSettings:
    button_pin: Optional[int] = field(default=None, metadata=bounded(0, 53))
    """GPIO pin (BCM numbering) of the privacy button, wired to ground (internal pull-up, debounced); null for no button."""
    pause_minutes: float = field(default=15.0, metadata=bounded(0.1, 1440))
    """How long a short press of the button (or `edge pause` without minutes) stops recording, in minutes."""
    forget_hold_s: float = field(default=3.0, metadata=bounded(1.0, 30.0))
    """How long the button must be held to forget, in seconds."""
    forget_minutes: float = field(default=5.0, metadata=bounded(0.5, 120))
    """How much of the most recent recording a long press removes from the card, in minutes."""


@dataclass(frozen=True)
class ServiceSettings:
    status_file: str = "status.json"
    """Where the daemon publishes its state for `edge status`, rewritten every 5 s: kept off the card, so relative paths are under $RUNTIME_DIRECTORY (systemd's tmpfs), else $XDG_RUNTIME_DIR/edge-recorder, else the working directory."""
    control_socket: str = "control.sock"
    """Unix socket for `edge pause`, `edge resume` and `edge forget`; a relative path is beside the status file (in memory, like it)."""


@dataclass(frozen=True)
class ExportSettings:
    usb_label: str = "EDGE-EXPORT"
    """Filesystem label of a USB stick that triggers the automatic export when plugged in."""
    auto: bool = False
    """Export to a stick labelled usb_label as soon as it is plugged in (the installer adds a udev rule and a systemd unit)."""
    move: bool = False
    """On automatic exports, delete recordings from the card once their copy on the stick is verified."""


@dataclass(frozen=True)
class PrivacySettings:
    recipients: tuple[str, ...] = ()
    """age public keys ('age1...') and/or absolute paths of recipients files; segments are stored encrypted to them (.wav.age) when any is given."""


@dataclass(frozen=True)
class SyncSettings:
    remote: Optional[str] = None
    """rclone remote and folder for this device's recordings, `{device}` standing for the device name (e.g. `school-nas:recordings/{device}`); null: no network copy."""
    rclone_config: str = "rclone.conf"
    """rclone's own config file (remotes and their credentials), readable only by the service user; relative like recordings_dir."""
    bwlimit: Optional[float] = field(default=1.0, metadata=bounded(0.01, 10000))
    """Most upload bandwidth rclone may use, in MiB/s; null for no limit."""
    timeout_s: float = field(default=30.0, metadata=bounded(1, 3600))
    """How long to wait for the remote to answer a connection before giving up, in seconds."""
    delete_after_verified: bool = False
    """Delete a segment from the card once its copy on the remote is verified and listed in the remote manifest."""


@dataclass(frozen=True)
class Settings:
    audio: AudioSettings = AudioSettings()
    detector: DetectorSettings = DetectorSettings()
    denoise: DenoiseSettings = DenoiseSettings()
    segmenter: SegmenterSettings = SegmenterSettings()
    storage: StorageSettings = StorageSettings()
    led: LedSettings = LedSettings()
    controls: ControlsSettings = ControlsSettings()
    service: ServiceSettings = ServiceSettings()
    export: ExportSettings = ExportSettings()
    privacy: PrivacySettings = PrivacySettings()
    sync: SyncSettings = SyncSettings()


def default_config_path() -> Path:
    try:
        return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else DEFAULT_CONFIG
    except PermissionError:
        return SYSTEM_CONFIG  # installed but closed to this user: load_config says how to run


def add_config_argument(parser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help=f"YAML settings (default: {SYSTEM_CONFIG} when installed, else {DEFAULT_CONFIG})")


def load_config(path: str | Path | None = None) -> Settings:
    """Read a YAML config (see default_config_path); a missing section or key keeps its default."""
    given = path is not None
    path = Path(path) if given else default_config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        if not given:  # an office install: the bundled default is not part of the wheel
            raise EdgeError(f"no --config given and {SYSTEM_CONFIG} does not exist (no recorder is "
                            "installed on this computer): pass --config FILE") from None
        raise EdgeError(f"{path}: config file not found") from None
    except PermissionError:
        raise EdgeError(permission_denied(path)) from None
    except OSError as exc:
        raise EdgeError(f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise EdgeError(f"{path}: not a text file (byte {exc.start + 1} is not UTF-8; expected YAML)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise EdgeError(f"{path}: not valid YAML{where}") from None
    return settings_from_dict(data if data is not None else {}, str(path))


def settings_from_dict(data: Any, origin: str = "config") -> Settings:
    return _build(Settings, data, origin, prefix="")


def _build(cls: type, data: Any, origin: str, prefix: str):
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "the top level"
        raise EdgeError(f"{origin}: {where} must be a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            known = ", ".join(fields)
            raise EdgeError(f"{origin}: unknown key '{printable(prefix + str(key))}' (expected one of: {known})")
    values = {}
    for name, value in data.items():
        key = prefix + name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, origin, prefix=key + ".")
        else:
            values[name] = _check_value(key, hint, fields[name].metadata, value, origin)
    return cls(**values)


def _check_value(key: str, hint: Any, metadata: Any, value: Any, origin: str) -> Any:
    optional = typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if value is None:
        if optional:
            return None
        raise EdgeError(f"{origin}: {key} must not be empty")
    if typing.get_origin(base) is tuple:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise EdgeError(f"{origin}: {key} must be a list of texts, got {shown(value)}")
        return tuple(value)
    expected = {bool: "true or false", int: "a whole number", float: "a number", str: "a text"}[base]
    if optional:
        expected += " or null"
    # bool is an int in Python; a YAML `yes` for a number is a mistake, not a 1.
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
        if ok and any(unicodedata.category(c) == "Cc" for c in value):
            raise EdgeError(f"{origin}: {key} must be a text without control characters, got {shown(value)}")
    if not ok:
        raise EdgeError(f"{origin}: {key} must be {expected}, got {shown(value)}")
    low, high = metadata.get("range", (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        raise EdgeError(f"{origin}: {key} must be between {low} and {high}, got {shown(value)}")
    choices = metadata.get("choices")
    if choices and value not in choices:
        raise EdgeError(f"{origin}: {key} must be one of {', '.join(choices)}, got {shown(value)}")
    return value


def resolve_data_path(name: str) -> Path:
    """Place a relative data path under systemd's StateDirectory when running as a service."""
    path = Path(name)
    if path.is_absolute():
        return path
    state = os.environ.get("STATE_DIRECTORY")
    return (Path(state.split(":")[0]) if state else Path.cwd()) / path


def resolve_runtime_path(name: str) -> Path:
    """Place a relative path for what is rewritten often and needs no durability (the status)
    in memory, never on the SD card: under systemd's RuntimeDirectory (a tmpfs) for the
    service, else the login session's runtime directory (`make run`), else the working
    directory (no session: a container, a cron job)."""
    path = Path(name)
    if path.is_absolute():
        return path
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if runtime:
        return Path(runtime.split(":")[0]) / path
    session = os.environ.get("XDG_RUNTIME_DIR")
    return (Path(session) / "edge-recorder" if session else Path.cwd()) / path


def device_name(storage: StorageSettings) -> str:
    return storage.device_name or socket.gethostname().split(".")[0]


def neg_threshold(detector: DetectorSettings) -> float:
    if detector.neg_threshold is not None:
        return detector.neg_threshold
    return max(detector.threshold - 0.15, 0.01)
