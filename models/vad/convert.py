"""Convert the pinned Silero VAD ONNX file's 16 kHz network to a float32 TFLite file for LiteRT.

The network (Silero VAD v5/v6 at 16 kHz), per channel and per 32 ms chunk of 512 samples plus the
64 samples before it: reflect-pad 64 samples on the right, a 256-point STFT as a convolution with a
stride of 128 (4 frames, 129 magnitudes each), four 3-tap convolutions with ReLU (strides 1, 2, 2,
1) down to one 128-wide vector, an LSTM cell (the recurrent state: h and c), then ReLU, a 1x1
projection and a sigmoid: the speech probability. The weights are read from the ONNX file, never
retrained; ``tests/test_vad_models.py`` checks the result against ONNX Runtime on real speech.

Needs ``onnx`` and TensorFlow at conversion time only (``pip install -e '.[dev,affect-build]'``);
the box runs the committed ``.tflite`` file on LiteRT. TensorFlow's converter is deterministic:
the same pinned input gives the same bytes (the manifest's checksum).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge.frames import FRAME_SAMPLES
from edge.vad import CONTEXT_SAMPLES

log = logging.getLogger(__name__)

OUT = Path(__file__).with_name("silero_vad.tflite")
CHUNK_SAMPLES = FRAME_SAMPLES + CONTEXT_SAMPLES
"""512 new samples and the 64 before them (what :class:`edge.vad.SileroVad` feeds)."""
HIDDEN = 128
ENCODER_STRIDES = (1, 2, 2, 1)
WEIGHTS = {
    "stft.forward_basis_buffer": (258, 1, 256),
    **{f"encoder.{i}.reparam_conv.{p}": s for i, (o, c) in enumerate(((128, 129), (64, 128), (64, 64),
                                                                      (128, 64)))
       for p, s in (("weight", (o, c, 3)), ("bias", (o,)))},
    "decoder.rnn.weight_ih": (4 * HIDDEN, HIDDEN),
    "decoder.rnn.weight_hh": (4 * HIDDEN, HIDDEN),
    "decoder.rnn.bias_ih": (4 * HIDDEN,),
    "decoder.rnn.bias_hh": (4 * HIDDEN,),
    "decoder.decoder.2.weight": (1, HIDDEN, 1),
    "decoder.decoder.2.bias": (1,),
}
"""The tensors of the 16 kHz network, by their name in the ONNX file, with their shapes."""


def silero_weights(onnx_path: Path) -> dict[str, np.ndarray]:
    """The 16 kHz network's weights from a Silero VAD ONNX file.

    The file's graph compares ``sr`` with 16000 and branches: the weights are the constants of the
    ``then`` branch (the 8 kHz branch has its own).

    Raises:
        ValueError: the file does not hold the expected tensors.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise RuntimeError("converting Silero VAD needs onnx: `pip install -e '.[dev]'`") from exc
    graph = onnx.load(str(onnx_path)).graph
    branch = next((a.g for n in graph.node if n.op_type == "If" for a in n.attribute
                   if a.name == "then_branch"), None)
    if branch is None:
        raise ValueError(f"{onnx_path}: no 16 kHz branch (not a Silero VAD v5/v6 file?)")
    found: dict[str, np.ndarray] = {}

    def walk(g: Any) -> None:
        for init in g.initializer:
            found[init.name] = numpy_helper.to_array(init)
        for node in g.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(branch)
    out = {}
    for name, shape in WEIGHTS.items():
        hits = [v for k, v in found.items() if k == name or k.endswith("__" + name)]
        if len(hits) != 1 or hits[0].shape != shape:
            raise ValueError(f"{onnx_path}: expected one {name} of shape {shape}, found "
                             f"{[h.shape for h in hits]}")
        out[name] = hits[0].astype(np.float32)
    return out


def to_tflite(w: dict[str, np.ndarray], path: Path) -> None:
    """Write the float32 TFLite file: inputs ``input`` (batch, 576) and ``state`` (2, batch, 128),
    outputs the speech probability (batch, 1) and the next state (2, batch, 128)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise RuntimeError("converting Silero VAD needs TensorFlow: "
                           "`pip install -e '.[dev,affect-build]'`") from exc

    def conv_kernel(weight: np.ndarray) -> Any:  # (out, in, taps) -> (taps, in, out)
        return tf.constant(np.ascontiguousarray(np.transpose(weight, (2, 1, 0))))

    basis = conv_kernel(w["stft.forward_basis_buffer"])
    bins = basis.shape[-1] // 2
    encoder = [(conv_kernel(w[f"encoder.{i}.reparam_conv.weight"]),
                tf.constant(w[f"encoder.{i}.reparam_conv.bias"]), stride)
               for i, stride in enumerate(ENCODER_STRIDES)]
    w_ih = tf.constant(np.ascontiguousarray(w["decoder.rnn.weight_ih"].T))
    w_hh = tf.constant(np.ascontiguousarray(w["decoder.rnn.weight_hh"].T))
    b_rnn = tf.constant(w["decoder.rnn.bias_ih"] + w["decoder.rnn.bias_hh"])
    w_out = tf.constant(np.ascontiguousarray(w["decoder.decoder.2.weight"][0]))
    b_out = tf.constant(w["decoder.decoder.2.bias"])

    @tf.function(input_signature=[tf.TensorSpec([None, CHUNK_SAMPLES], tf.float32, name="input"),
                                  tf.TensorSpec([2, None, HIDDEN], tf.float32, name="state")])
    def forward(x: Any, state: Any) -> Any:
        y = tf.pad(x, [[0, 0], [0, 64]], mode="REFLECT")[:, :, None]
        y = tf.nn.conv1d(y, basis, stride=128, padding="VALID")
        y = tf.sqrt(y[..., :bins] ** 2 + y[..., bins:] ** 2)
        for kernel, bias, stride in encoder:
            y = tf.pad(y, [[0, 0], [1, 1], [0, 0]])
            y = tf.nn.relu(tf.nn.conv1d(y, kernel, stride=stride, padding="VALID") + bias)
        h, c = state[0], state[1]
        gates = tf.matmul(y[:, 0, :], w_ih) + tf.matmul(h, w_hh) + b_rnn
        i, f, g, o = tf.split(gates, 4, axis=1)  # PyTorch's gate order
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        prob = tf.sigmoid(tf.matmul(tf.nn.relu(h), w_out) + b_out)
        return {"output": prob, "stateN": tf.stack([h, c])}

    module = tf.Module()
    module.forward = forward
    with tempfile.TemporaryDirectory(prefix="miroir-vad-") as tmp:  # a saved model keeps the names
        tf.saved_model.save(module, tmp, signatures={"serving_default": forward.get_concrete_function()})
        path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(tmp).convert())


def convert(out: Path = OUT, write_manifest: bool = True) -> dict[str, Any]:
    """Build ``silero_vad.tflite`` from the checksum-verified ONNX file.

    Args:
        out: where to write the file.
        write_manifest: record its SHA-256 and size in ``models/manifest.json``.

    Returns:
        The file's path, SHA-256 and size in bytes.
    """
    from models.build import MANIFEST, model_path, sha256

    to_tflite(silero_weights(model_path("silero_vad")), out)
    digest, size = sha256(out), out.stat().st_size
    if write_manifest:
        doc = json.loads(MANIFEST.read_text())
        entry = doc["models"]["silero_vad_tflite"]
        entry["sha256"], entry["bytes"] = digest, size
        MANIFEST.write_text(json.dumps(doc, indent=2) + "\n")
    log.info("wrote %s (%d bytes, SHA-256 %s)", out, size, digest)
    return {"file": str(out), "sha256": digest, "bytes": size}
