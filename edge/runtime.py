"""One model interface over ONNX Runtime and the LiteRT (TFLite) runtime, imported lazily."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


class Model(Protocol):
    """A loaded model: named float/int inputs in, named outputs out."""

    input_names: frozenset[str]
    """The names :meth:`run` takes."""

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference."""
        ...


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "onnxruntime is not installed: install the box extra, `pip install 'miroir[box]'`"
        ) from exc
    return onnxruntime


class OnnxModel:
    """An ONNX model on ONNX Runtime's CPU provider, one thread by default (a Pi has four cores)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        ort = _import_onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), sess_options=opts,
                                             providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.input_names = frozenset(i.name for i in self._session.get_inputs())
        log.debug("loaded %s with onnxruntime %s", path.name, ort.__version__)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference and return the outputs by name."""
        return dict(zip(self._outputs, self._session.run(self._outputs, inputs), strict=True))


def _import_litert() -> Any:
    try:
        from ai_edge_litert import interpreter
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "no TFLite runtime: install the LiteRT extra, `pip install 'miroir[litert]'`"
        ) from exc
    return interpreter


class LiteRtModel:
    """A TFLite model on LiteRT (``ai-edge-litert``).

    Inputs and outputs go by their signature's names when the file has one (else by tensor
    name); an input whose shape changes (another batch size) resizes the model first.
    """

    def __init__(self, path: Path, threads: int = 1) -> None:
        interpreter = _import_litert()
        self._interp = interpreter.Interpreter(model_path=str(path), num_threads=threads)
        self._interp.allocate_tensors()
        signatures = self._interp.get_signature_list()
        # the indices below are used on the interpreter's main subgraph: one-signature files only
        if len(signatures) > 1:
            raise ValueError(f"{path.name}: {len(signatures)} signatures, expected at most one")
        if signatures:
            runner = self._interp.get_signature_runner(next(iter(signatures)))
            inputs = runner.get_input_details()
            outputs = list(runner.get_output_details().items())
        else:
            inputs = {d["name"]: d for d in self._interp.get_input_details()}
            outputs = [(d["name"], d) for d in self._interp.get_output_details()]
        self._inputs = {name: (d["index"], d["dtype"]) for name, d in inputs.items()}
        self.input_names = frozenset(self._inputs)
        self._shapes = {name: tuple(d["shape"]) for name, d in inputs.items()}
        self._outputs = [(name, d["index"]) for name, d in outputs]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference and return the outputs by name."""
        resized = False
        for name, value in inputs.items():
            if value.shape != self._shapes[name]:
                self._interp.resize_tensor_input(self._inputs[name][0], list(value.shape))
                self._shapes[name] = value.shape
                resized = True
        if resized:
            self._interp.allocate_tensors()
        for name, value in inputs.items():
            index, dtype = self._inputs[name]
            self._interp.set_tensor(index, value.astype(dtype, copy=False))
        self._interp.invoke()
        return {name: self._interp.get_tensor(index) for name, index in self._outputs}


def load_model(path: Path, backend: str = "auto", threads: int = 1) -> Model:
    """Load a model file with the named backend (``onnx``, ``litert`` or ``auto`` by suffix).

    Args:
        path: the model file (``.onnx`` or ``.tflite``).
        backend: which runtime to use.
        threads: intra-op threads.

    Returns:
        A :class:`Model`.
    """
    if backend == "auto":
        backend = "litert" if path.suffix == ".tflite" else "onnx"
    if backend == "onnx":
        return OnnxModel(path, threads)
    if backend == "litert":
        return LiteRtModel(path, threads)
    raise ValueError(f"unknown model backend {backend!r} (onnx, litert or auto)")
