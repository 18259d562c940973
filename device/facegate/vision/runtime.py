"""The TFLite interpreter behind one small class, so the vision code does not care which runtime is installed.

LiteRT (``ai-edge-litert``) is preferred; ``tflite_runtime`` is the fallback for images that only have it. It
really exists only for Python <= 3.11 on aarch64 (2.14.0, the last release: Bookworm, not Trixie's 3.13) and,
although its metadata says ``numpy>=1.23.2``, it is built for numpy 1.x and breaks under numpy 2, so it is
refused there with that reason instead of failing somewhere inside.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from facegate.errors import ModelError
from facegate.vision.models import ModelEntry


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        if int(np.__version__.split(".")[0]) >= 2:
            raise ModelError(
                f"no TFLite runtime: ai-edge-litert is not installed, and tflite_runtime (built for numpy 1.x) "
                f"cannot run with numpy {np.__version__}; install ai-edge-litert (pip install ai-edge-litert)"
            ) from None
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ModelError(
                "no TFLite runtime: install ai-edge-litert (pip install ai-edge-litert) or tflite-runtime"
            ) from None
    return Interpreter


#: What LiteRT's C++ runtime prints on stderr once per process when XNNPACK is set up: an INFO line, not news.
DELEGATE_NOTICE = b"Created TensorFlow Lite XNNPACK delegate"


@contextmanager
def without_delegate_notice() -> Iterator[None]:
    """Around interpreter creation in a CLI command: drop LiteRT's XNNPACK INFO line from stderr, keep the rest.

    The line is written by C++ straight to file descriptor 2, out of Python's reach, so fd 2 points at a
    temporary file for the duration; afterwards every other line captured (a real warning or error of the
    runtime) is written to stderr after all. Only for single-threaded moments (a command building its
    pipeline): another thread's stderr output in the window would be delayed until the end, not lost.
    """
    sys.stderr.flush()
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                capture.seek(0)
                kept = [line for line in capture.read().splitlines(keepends=True) if DELEGATE_NOTICE not in line]
                if kept:
                    sys.stderr.write(b"".join(kept).decode(errors="replace"))
                    sys.stderr.flush()
        finally:
            os.close(saved)


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
