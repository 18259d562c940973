"""``--measure``: size, cosine similarity to the float32 embedder and latency of every embedder variant, written to
``build/models/report.json`` and ``report.md``."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tools.models.convert import (
    alignment_method,
    calibration_faces,
    face_lists,
    normalise,
    run_tflite,
)
from tools.models.verify import load_manifest

LATENCY_RUNS = 200
LATENCY_WARMUP = 20
LATENCY_ROUNDS = 5


# --------------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------------


def latency_ms(path: Path, face: Any, threads: int) -> float:
    """Median wall time of one invoke after warm-up (ai-edge-litert applies XNNPACK by default)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    interpreter.set_tensor(inp["index"], face[None])
    for _ in range(LATENCY_WARMUP):
        interpreter.invoke()
    samples = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        interpreter.invoke()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def xnnpack_partitions(path: Path) -> int:
    """Number of XNNPACK delegate partitions: 1 means the whole graph runs in XNNPACK.

    Every operator XNNPACK cannot take splits the graph and runs on LiteRT's builtin kernels, the
    usual reason a quantized model is slower than its float original. Uses the interpreter's
    private op listing, which is the only place the Python API shows the delegated nodes.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())


def cosine_rows(a: Any, b: Any) -> Any:
    """Row-wise cosine similarity of two embedding matrices."""
    import numpy as np

    dot = (a * b).sum(axis=1)
    return dot / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def measure(variants_out: Path, faces: Path) -> list[dict[str, Any]]:
    """Size, cosine to the float32 embedder and latency of every embedder in ``variants_out``.

    Latency is the best of ``LATENCY_ROUNDS`` interleaved rounds of the median of
    ``LATENCY_RUNS`` invokes: on a shared 2-core machine a burst of other work inflates one round,
    and interleaving spreads that over the variants instead of hitting one of them.
    """
    _, evaluation_paths = face_lists(faces)
    batch = normalise(calibration_faces(evaluation_paths, variants_out))
    entries = [e for e in load_manifest(variants_out)["models"] if e["role"] == "embedder"]
    reference = run_tflite(variants_out / "mobilefacenet_float32.tflite", batch)
    rows = []
    for entry in entries:
        cosine = cosine_rows(run_tflite(variants_out / entry["file"], batch), reference)
        rows.append(
            {
                "name": entry["name"],
                "quantization": entry["quantization"],
                "bytes": entry["bytes"],
                "faces": len(batch),
                "cosine_min": round(float(cosine.min()), 6),
                "cosine_mean": round(float(cosine.mean()), 6),
                "xnnpack_partitions": xnnpack_partitions(variants_out / entry["file"]),
            }
        )
    for threads in (1, 2):
        key = f"latency_ms_{threads}_thread{'s' if threads > 1 else ''}"
        for _ in range(LATENCY_ROUNDS):
            for row, entry in zip(rows, entries, strict=True):
                ms = latency_ms(variants_out / entry["file"], batch[0], threads)
                row[key] = round(min(ms, row.get(key, ms)), 2)
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def write_report(variants_out: Path, rows: list[dict[str, Any]], command: str, load_before: Sequence[float]) -> None:
    """Save the measurements as JSON and as the Markdown table used in models/README.md."""
    import platform

    meta = {
        "command": command,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "packages": package_versions(),
        "crop": alignment_method(variants_out),
        "latency_runs": LATENCY_RUNS,
        "latency_rounds": LATENCY_ROUNDS,
        "latency_warmup": LATENCY_WARMUP,
    }
    (variants_out / "report.json").write_text(
        json.dumps({"meta": meta, "embedders": rows}, indent=2) + "\n", encoding="utf-8"
    )
    lines = [
        "| variant | quantization | size (bytes) | cosine min | cosine mean | "
        "ms @1 thread | ms @2 threads | XNNPACK partitions |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['name']} | {r['quantization']} | {r['bytes']:,} | {r['cosine_min']:.4f} | "
        f"{r['cosine_mean']:.5f} | {r['latency_ms_1_thread']:.2f} | "
        f"{r['latency_ms_2_threads']:.2f} | {r['xnnpack_partitions']} |"
        for r in rows
    ]
    (variants_out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def package_versions() -> dict[str, str]:
    """Versions of the converter stack, recorded next to the figures they produced."""
    from importlib import metadata

    names = ("tensorflow", "keras", "ai-edge-litert", "ai-edge-quantizer", "numpy", "opencv-python-headless")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found
