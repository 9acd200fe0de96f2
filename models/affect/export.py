"""Export a trained :class:`~models.affect.net.Net` to float ONNX, int8 QDQ ONNX and int8 TFLite.

The models take standardized, clipped features (``features``, float32 (n, d)) and return the two
probabilities (``probs``, float32 (n, 2): arousal, tension). The standardization lives in
``affect_features.json`` next to them. Build-time only: ``onnx`` (with ``sympy`` for
``quant_pre_process``) and, for TFLite, TensorFlow (``pip install 'miroir[affect-build]'``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from models.affect.net import Net

INPUT = "features"
OUTPUT = "probs"
OPSET = 17


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise RuntimeError("exporting needs onnx: `pip install 'miroir[affect-build]'`") from exc
    return onnx


def to_onnx(net: Net, path: Path) -> None:
    """Write the float model as ONNX (Gemm, Relu, Gemm, Sigmoid; or Gemm, Sigmoid when linear)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    d = net.w1.shape[0]
    inits = [numpy_helper.from_array(net.w1.astype(np.float32), "w1"),
             numpy_helper.from_array(net.b1.astype(np.float32), "b1")]
    nodes = [helper.make_node("Gemm", [INPUT, "w1", "b1"], ["h1"], name="dense1")]
    last = "h1"
    if net.w2 is not None:
        assert net.b2 is not None
        inits += [numpy_helper.from_array(net.w2.astype(np.float32), "w2"),
                  numpy_helper.from_array(net.b2.astype(np.float32), "b2")]
        nodes += [helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
                  helper.make_node("Gemm", ["a1", "w2", "b2"], ["logits"], name="dense2")]
        last = "logits"
    nodes.append(helper.make_node("Sigmoid", [last], [OUTPUT], name="sigmoid"))
    graph = helper.make_graph(
        nodes, "miroir_affect",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["n", d])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["n", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="miroir-affect")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def quantize_onnx(float_path: Path, out_path: Path, calib: np.ndarray) -> None:
    """Static QDQ int8 quantization (per-channel int8 weights, uint8 activations), MinMax calibration.

    Args:
        float_path: the float ONNX model.
        out_path: where to write the int8 model.
        calib: standardized training features used to calibrate the activation ranges.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{INPUT: calib[i:i + 1].astype(np.float32)} for i in range(len(calib))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="miroir-affect-q-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def tensorflow_available() -> bool:
    """Whether TensorFlow (the optional ``affect-build`` extra) is importable."""
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def to_tflite(net: Net, path: Path, calib: np.ndarray) -> None:
    """Full-integer int8 TFLite (float32 in and out, int8 inside) with a representative dataset.

    Args:
        net: the trained network.
        path: where to write the ``.tflite`` file.
        calib: standardized training features (the representative dataset).
    """
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise RuntimeError("TFLite export needs TensorFlow: `pip install 'miroir[affect-build]'`") from exc
    tf.keras.utils.set_random_seed(0)
    d = net.w1.shape[0]
    w1 = tf.constant(net.w1.astype(np.float32))
    b1 = tf.constant(net.b1.astype(np.float32))
    w2 = None if net.w2 is None else tf.constant(net.w2.astype(np.float32))
    b2 = None if net.b2 is None else tf.constant(net.b2.astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, d], tf.float32, name=INPUT)])
    def forward(features: Any) -> Any:
        h = tf.matmul(features, w1) + b1
        if w2 is not None:
            h = tf.matmul(tf.nn.relu(h), w2) + b2
        return {OUTPUT: tf.sigmoid(h)}

    def representative() -> Any:
        for i in range(len(calib)):
            yield [calib[i:i + 1].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], forward)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path.write_bytes(converter.convert())
