"""The TFLite interpreter behind one small class, so the vision code does not care which runtime is installed.

LiteRT (``ai-edge-litert``) is preferred; Raspberry Pi OS images often only have ``tflite_runtime``
(which needs numpy<2), so that is the fallback.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facegate.errors import ModelError
from facegate.models import ModelEntry


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ModelError(
                "no TFLite runtime: install ai-edge-litert (pip install ai-edge-litert) or tflite-runtime"
            ) from None
    return Interpreter


def runtime_name() -> str:
    return str(_interpreter_class().__module__.split(".")[0])


class TFLiteModel:
    """One loaded model with fixed input size; ``run`` returns outputs in the interpreter's order."""

    def __init__(self, entry: ModelEntry, threads: int = 2) -> None:
        self.entry = entry
        try:
            self._interp = _interpreter_class()(model_path=str(entry.path), num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load model {entry.path}: {exc}") from None
        detail = self._interp.get_input_details()[0]
        self._input_index = int(detail["index"])
        self.input_shape: tuple[int, ...] = tuple(int(v) for v in detail["shape"])
        self.input_dtype = np.dtype(detail["dtype"])
        self._outputs = [int(d["index"]) for d in self._interp.get_output_details()]

    @property
    def batch(self) -> int:
        return self.input_shape[0]

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """RGB 0..255 → the model's input range, as declared in the manifest."""
        spec = self.entry.input
        return ((pixels.astype(np.float32) - spec.mean) / spec.std).astype(self.input_dtype)

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        self._interp.set_tensor(self._input_index, tensor)
        self._interp.invoke()
        return [self._interp.get_tensor(i) for i in self._outputs]
