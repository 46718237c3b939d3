"""Build the shipped TFLite ports of Silero VAD (16 kHz branch) from the package's ONNX model.

Run by `make model` in the build venv (models/requirements-build.txt plus silero-vad
installed with --no-deps); never needed on the device. Steps:
  1. read the 16 kHz weights from silero_vad.onnx (then-branch of its top-level If node);
  2. rebuild the network in TensorFlow with the LSTM state as explicit inputs/outputs;
  3. check the TensorFlow graph against onnxruntime on real speech;
  4. convert to TFLite (int8 dynamic-range weights, fp16 weights), give the model tensors
     the signature names, check both files against onnxruntime and write them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Quiet TensorFlow's C++ logging; must be set before it loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import onnx  # noqa: E402
import onnxruntime  # noqa: E402
import tensorflow as tf  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from tensorflow.lite.python import schema_py_generated as tflite_schema  # noqa: E402
from tensorflow.lite.tools import flatbuffer_utils  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parent
REPO_DIR = MODELS_DIR.parent
SPEECH_WAV = REPO_DIR / "tests" / "data" / "silero_test_6s.wav"

SAMPLE_RATE = 16000
WINDOW = 512
CONTEXT = 64
MODEL_INPUT = CONTEXT + WINDOW
STATE = 128
# ONNX checkpoint names, without the "If_0_then_branch__Inline_0__" prefix of the 16 kHz branch.
ONNX_PREFIX = "If_0_then_branch__Inline_0__"
ENCODER_STRIDES = (1, 2, 2, 1)

# Signature (and tensor) names: the wrapper looks tensors up by these, never by index.
INPUT_NAMES = ("audio", "h", "c")
OUTPUT_NAMES = ("prob", "h", "c")


@dataclass(frozen=True)
class Variant:
    file_name: str
    fp16_weights: bool
    # Worst acceptable difference to the ONNX reference on the speech clip, per window.
    max_abs_diff: float


VARIANTS = (
    Variant("silero_vad_int8.tflite", fp16_weights=False, max_abs_diff=0.1),
    Variant("silero_vad_fp16.tflite", fp16_weights=True, max_abs_diff=0.02),
)
# float32 TensorFlow against float32 onnxruntime: only summation order differs.
TF_GRAPH_TOLERANCE = 1e-4


def silero_onnx_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("build_model: silero-vad is not installed (pip install --no-deps silero-vad==6.2.3)")
    return Path(spec.submodule_search_locations[0]) / "data" / "silero_vad.onnx"


def load_16k_weights(onnx_path: Path) -> dict[str, np.ndarray]:
    """The weights are Constant nodes inside the If node's then-branch (taken when sr == 16000)."""
    graph = onnx.load(str(onnx_path)).graph
    (sample_rate_if,) = [node for node in graph.node if node.op_type == "If"]
    (branch,) = [a.g for a in sample_rate_if.attribute if a.name == "then_branch"]
    weights = {}
    for node in branch.node:
        name = node.output[0]
        if node.op_type == "Constant" and name.startswith(ONNX_PREFIX) and "/" not in name:
            weights[name[len(ONNX_PREFIX):]] = numpy_helper.to_array(node.attribute[0].t)
    expected = {"stft.forward_basis_buffer": (258, 1, 256), "decoder.rnn.weight_ih": (512, 128)}
    for key, shape in expected.items():
        if weights.get(key, np.empty(0)).shape != shape:
            sys.exit(f"build_model: {onnx_path} has no 16 kHz weight {key} of shape {shape}")
    return weights


class SileroVad16k(tf.Module):
    """Silero VAD v5/v6, 16 kHz, one 512-sample window (plus 64 samples of context) per call."""

    def __init__(self, weights: dict[str, np.ndarray]):
        super().__init__()
        # PyTorch Conv1d weights are [out, in, k]; TensorFlow conv1d wants [k, in, out].
        self.stft_basis = tf.constant(weights["stft.forward_basis_buffer"].transpose(2, 1, 0))
        self.encoder = [
            (
                tf.constant(weights[f"encoder.{i}.reparam_conv.weight"].transpose(2, 1, 0)),
                tf.constant(weights[f"encoder.{i}.reparam_conv.bias"]),
                stride,
            )
            for i, stride in enumerate(ENCODER_STRIDES)
        ]
        # Kept as two matrices so each gets its own quantization scale.
        self.lstm_input_kernel = tf.constant(weights["decoder.rnn.weight_ih"].T)
        self.lstm_state_kernel = tf.constant(weights["decoder.rnn.weight_hh"].T)
        self.lstm_bias = tf.constant(weights["decoder.rnn.bias_ih"] + weights["decoder.rnn.bias_hh"])
        self.head_kernel = tf.constant(weights["decoder.decoder.2.weight"].reshape(1, STATE).T)
        self.head_bias = tf.constant(weights["decoder.decoder.2.bias"])

    @tf.function(
        input_signature=[
            tf.TensorSpec([1, MODEL_INPUT], tf.float32, name=INPUT_NAMES[0]),
            tf.TensorSpec([1, STATE], tf.float32, name=INPUT_NAMES[1]),
            tf.TensorSpec([1, STATE], tf.float32, name=INPUT_NAMES[2]),
        ]
    )
    def __call__(self, audio, h, c):
        padded = tf.pad(audio, [[0, 0], [0, CONTEXT]], mode="REFLECT")
        spectrum = tf.nn.conv1d(padded[:, :, None], self.stft_basis, stride=128, padding="VALID")
        real, imag = spectrum[:, :, :129], spectrum[:, :, 129:]
        x = tf.sqrt(real * real + imag * imag)
        for kernel, bias, stride in self.encoder:
            # PyTorch pads 1 on both sides; TensorFlow's SAME would pad stride-2 convs asymmetrically.
            x = tf.pad(x, [[0, 0], [1, 1], [0, 0]])
            x = tf.nn.relu(tf.nn.conv1d(x, kernel, stride=stride, padding="VALID") + bias)
        # 576 samples give exactly one encoder frame, so the LSTM cell runs once.
        features = x[:, 0, :]
        gates = (
            tf.matmul(features, self.lstm_input_kernel)
            + tf.matmul(h, self.lstm_state_kernel)
            + self.lstm_bias
        )
        input_gate, forget_gate, cell_gate, output_gate = tf.split(gates, 4, axis=1)  # PyTorch order
        c_next = tf.sigmoid(forget_gate) * c + tf.sigmoid(input_gate) * tf.tanh(cell_gate)
        h_next = tf.sigmoid(output_gate) * tf.tanh(c_next)
        frame_probs = tf.sigmoid(tf.matmul(tf.nn.relu(h_next), self.head_kernel) + self.head_bias)
        prob = tf.reduce_mean(frame_probs, axis=1)
        return {OUTPUT_NAMES[0]: prob, OUTPUT_NAMES[1]: h_next, OUTPUT_NAMES[2]: c_next}


def read_speech(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            sys.exit(f"build_model: {path} must be 16 kHz mono 16-bit")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0


def model_inputs(samples: np.ndarray) -> list[np.ndarray]:
    """Each window with the previous 64 samples in front, as Silero's OnnxWrapper feeds it."""
    padded = np.concatenate([np.zeros(CONTEXT, np.float32), samples])
    count = len(samples) // WINDOW
    return [padded[i * WINDOW : i * WINDOW + MODEL_INPUT][None, :] for i in range(count)]


def onnx_reference(onnx_path: Path, inputs: list[np.ndarray]) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, STATE), np.float32)
    sample_rate = np.array(SAMPLE_RATE, np.int64)
    probs = []
    for audio in inputs:
        prob, state = session.run(None, {"input": audio, "state": state, "sr": sample_rate})
        probs.append(float(prob[0, 0]))
    return np.array(probs)


def run_stateful(step, inputs: list[np.ndarray]) -> np.ndarray:
    h = np.zeros((1, STATE), np.float32)
    c = np.zeros((1, STATE), np.float32)
    probs = []
    for audio in inputs:
        outputs = step(audio=audio, h=h, c=c)
        h, c = np.asarray(outputs["h"]), np.asarray(outputs["c"])
        probs.append(float(np.asarray(outputs["prob"]).reshape(-1)[0]))
    return np.array(probs)


def check(label: str, probs: np.ndarray, reference: np.ndarray, tolerance: float) -> None:
    worst = float(np.max(np.abs(probs - reference)))
    agree = float(np.mean((probs > 0.5) == (reference > 0.5)))
    print(f"{label}: max |diff| {worst:.5f}, 0.5 decisions agree {agree:.2%}")
    if worst > tolerance:
        sys.exit(f"build_model: {label} differs from the ONNX reference by {worst} (> {tolerance})")


def convert(module: SileroVad16k, variant: Variant) -> bytes:
    concrete = module.__call__.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant.fp16_weights:
        converter.target_spec.supported_types = [tf.float16]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return name_tensors_after_signature(converter.convert())


def name_tensors_after_signature(flatbuffer: bytes) -> bytes:
    """The converter names tensors "serving_default_audio:0", "StatefulPartitionedCall:1"...;
    renaming them to the signature keys gives the runtime-visible names a stable contract."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    (signature,) = model.signatureDefs
    (subgraph,) = model.subgraphs
    for tensor_maps, expected in ((signature.inputs, INPUT_NAMES), (signature.outputs, OUTPUT_NAMES)):
        names = sorted(m.name.decode() for m in tensor_maps)
        if names != sorted(expected):
            sys.exit(f"build_model: converter produced signature tensors {names}, expected {expected}")
        for tensor_map in tensor_maps:
            subgraph.tensors[tensor_map.tensorIndex].name = tensor_map.name
    custom = tflite_schema.BuiltinOperator.CUSTOM
    if any(custom in (op.builtinCode, op.deprecatedBuiltinCode) for op in model.operatorCodes):
        sys.exit("build_model: the converted model needs custom ops; only builtin ops are allowed")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def tflite_step(flatbuffer: bytes):
    interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    inputs = {d["name"]: d["index"] for d in interpreter.get_input_details()}
    outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    if sorted(inputs) != sorted(INPUT_NAMES) or sorted(outputs) != sorted(OUTPUT_NAMES):
        sys.exit(f"build_model: converted tensors are {inputs} -> {outputs}")

    def step(**feeds):
        for name, value in feeds.items():
            interpreter.set_tensor(inputs[name], value)
        interpreter.invoke()
        return {name: interpreter.get_tensor(index) for name, index in outputs.items()}

    return step


def main() -> int:
    onnx_path = silero_onnx_path()
    module = SileroVad16k(load_16k_weights(onnx_path))

    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(WINDOW * 40)).astype(np.float32)
    clips = {"speech clip": read_speech(SPEECH_WAV), "noise": noise}
    references = {}
    for clip, samples in clips.items():
        inputs = model_inputs(samples)
        references[clip] = (inputs, onnx_reference(onnx_path, inputs))
        check(f"TensorFlow graph, {clip}", run_stateful(module.__call__, inputs), references[clip][1],
              TF_GRAPH_TOLERANCE)

    for variant in VARIANTS:
        flatbuffer = convert(module, variant)
        step = tflite_step(flatbuffer)
        for clip, (inputs, reference) in references.items():
            check(f"{variant.file_name}, {clip}", run_stateful(step, inputs), reference,
                  variant.max_abs_diff)
        (MODELS_DIR / variant.file_name).write_bytes(flatbuffer)
        digest = hashlib.sha256(flatbuffer).hexdigest()
        print(f"wrote models/{variant.file_name}: {len(flatbuffer)} bytes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
