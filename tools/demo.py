#!/usr/bin/env python3
"""``make demo``: the door service on a built-in demo, with nothing but what the project may ship.

Builds a replay of frames from registry-shipped photos (scikit-image's astronaut, Eileen Collins, enrolled;
matplotlib's Grace Hopper as a stranger; empty scenes between visits), runs ``facegate run`` on it with
gpiozero's mock pins, publishes to a local Mosquitto when one answers on localhost:1883 (else the events
stay in the outbox), and prints each event as it happens.

The replay loops, so the door stays online (for Home Assistant, mosquitto_sub, a dashboard) until Ctrl-C, which
stops it cleanly (relay released, outbox flushed, ``offline`` published). ``--once`` plays the scenes once and
exits, ``--duration SECONDS`` stops by itself after that long: bounded runs for scripts and CI.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "device")]
from facegate.base.imageio import read_image
from facegate.gallery.store import Gallery, NewTemplate
from facegate.vision.pipeline import FacePipeline, PipelineOptions

from tools import ROOT

DEMO = ROOT / "build" / "demo"


def augment(image: np.ndarray, angle: float, gain: float, flip: bool, scale: float = 1.0,
            shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Rotation, exposure, mirror, zoom and shift: the same person on another day at the door."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 3), angle, scale)
    m[:, 2] += shift
    out = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    out = np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out[:, ::-1]) if flip else out


def in_scene(face_photo: np.ndarray, background: np.ndarray, size: int, x: int, y: int) -> np.ndarray:
    """A 640x480 camera frame with the photo at (x, y), size px wide: a person in front of the door."""
    frame = background.copy()
    h = round(face_photo.shape[0] * size / face_photo.shape[1])
    photo = cv2.resize(face_photo, (size, h), interpolation=cv2.INTER_AREA)
    y2, x2 = min(480, y + h), min(640, x + size)
    frame[y:y2, x:x2] = photo[: y2 - y, : x2 - x]
    return frame


def shipped_photos() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from matplotlib import cbook
    from skimage import data

    astronaut = np.ascontiguousarray(data.astronaut())
    hopper = read_image(Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    background = cv2.resize(cv2.cvtColor(data.brick(), cv2.COLOR_GRAY2RGB), (640, 480))
    return astronaut, hopper, background


def build_frames(folder: Path) -> int:
    astronaut, hopper, background = shipped_photos()
    frames: list[np.ndarray] = [background] * 5
    for i in range(12):  # the enrolled astronaut walks up to the door
        frames.append(in_scene(augment(astronaut, 3 - i * 0.5, 0.85, False), background, 480 + i * 8, 80, 0))
    # Longer than recognition.track_timeout_seconds (1 s) at the demo's 10 fps: the stranger must start a new
    # track, not inherit the astronaut's (already decided) one where she stood.
    frames += [background] * 15
    for i in range(12):  # a stranger
        frames.append(in_scene(augment(hopper, -2 + i * 0.3, 1.0, False), background, 300 + i * 6, 170, 10))
    frames += [background] * 5
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (folder / "0020b.jpg").write_bytes(b"\xff\xd8 a corrupt frame, rejected and reported")
    return len(frames)


def write_scene(folder: Path) -> int:
    """The demo's scene in a folder of the user's choosing, for a bench door: nothing here is ever wiped.

    ``folder/frames/`` gets the replay (``camera.source = "replay:<folder>/frames"``), ``folder/astronaut.png``
    the photo to enrol. Existing files of the same names are overwritten; nothing else in the folder is touched.
    """
    count = build_frames(folder / "frames")
    astronaut, _hopper, _bg = shipped_photos()
    cv2.imwrite(str(folder / "astronaut.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    return count


def enrol(gallery_path: Path) -> None:
    astronaut, _hopper, _bg = shipped_photos()
    pipeline = FacePipeline.from_models_dir(None, PipelineOptions(five_point=True))
    templates = []
    for image in (astronaut, augment(astronaut, 4, 1.1, True, 0.9)):
        best = pipeline.process(image, largest_only=True)[0]
        assert best.embedding is not None and not best.failures
        templates.append(NewTemplate(best.embedding, best.quality.as_dict(), "astronaut"))
    with Gallery(gallery_path) as gallery:
        gallery.enroll("astronaut", templates, pipeline.embedder_sha256, name="Eileen Collins")


def broker_up(host: str = "127.0.0.1", port: int = 1883) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def write_config(path: Path, frames: Path, state: Path, mqtt: bool, *, loop: bool = True,
                 host: str = "127.0.0.1", port: int = 1883) -> None:
    path.write_text(f"""device_id = "demo-door"
state_dir = "{state}"

[camera]
source = "replay:{frames}"
fps = 10
loop = {"true" if loop else "false"}

[door]
pin_factory = "mock"
relay_pin = 17
exit_pin = 22
unlock_seconds = 3

[mqtt]
enabled = {"true" if mqtt else "false"}
host = "{host}"
port = {port}

[outbox]
flush_timeout_seconds = 5

# The demo's "visitors" are photographs pasted into frames; the liveness gate would (rightly) refuse them: the
# astronaut by texture, Grace Hopper by the head-turn challenge she cannot answer (docs/liveness.md).
[liveness]
enabled = false
""")


def show(line: str) -> None:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        print(line.rstrip())
        return
    event = rec.get("event")
    if not event:
        if rec.get("level") in ("warning", "error"):
            print(f"  [{rec['level']}] {rec['msg']}")
        return
    detail = {k: v for k, v in event.items() if k not in ("event_id", "seq", "ts", "device_id", "type")}
    print(f"{event['ts'][11:23]}  {event['type']:<18} {json.dumps(detail)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="facegate's door service on a built-in demo (make demo)")
    parser.add_argument("--once", action="store_true", help="play the scenes once, then stop (default: loop)")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="stop by itself after this long (as Ctrl-C would)")
    parser.add_argument("--host", default="127.0.0.1", help="MQTT broker (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=1883, help="MQTT port (default 1883)")
    parser.add_argument("--dir", type=Path, default=DEMO, help=f"working folder, wiped first (default {DEMO})")
    parser.add_argument("--write-scene", type=Path, default=None, metavar="DIR",
                        help="only write the demo's frames (DIR/frames) and the photo to enrol (DIR/astronaut.png) "
                             "to DIR, which is not wiped, and exit: the scene for a bench door (README)")
    parser.add_argument("--extra-config", type=Path, default=None, metavar="TOML",
                        help="TOML appended to the demo's config, e.g. a [commands] section "
                             "(tools/checks/check_ha_live.py)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.write_scene is not None:
        count = write_scene(args.write_scene)
        print(f"demo: {count} frames (and a corrupt one) in {args.write_scene / 'frames'}; photo to enrol: "
              f"{args.write_scene / 'astronaut.png'}")
        return 0
    demo = args.dir
    shutil.rmtree(demo, ignore_errors=True)
    frames, state = demo / "frames", demo / "state"
    state.mkdir(parents=True)
    count = build_frames(frames)
    enrol(state / "gallery.db")
    mqtt = broker_up(args.host, args.port)
    write_config(demo / "facegate.toml", frames, state, mqtt, loop=not args.once, host=args.host, port=args.port)
    if args.extra_config is not None:
        with (demo / "facegate.toml").open("a") as config:
            config.write("\n" + args.extra_config.read_text())
    print(f"demo: {count} frames in {frames}; 'astronaut' enrolled; MQTT "
          + (f"to the broker already answering on {args.host}:{args.port} (the demo starts none of its own; "
             "watch: mosquitto_sub -v -t 'facegate/demo-door/#')" if mqtt else
             f"off: no broker answers on {args.host}:{args.port}, events stay in the outbox and journal"),
          flush=True)
    if args.once:
        print("demo: playing the scenes once", flush=True)
    else:
        limit = f" for {args.duration:g} s" if args.duration is not None else ""
        print(f"demo: the replay loops and the door stays online{limit}; press Ctrl-C to stop", flush=True)
    requested: list[bool] = []  # appended to by a signal handler or the timer: a list append takes no lock
    proc: subprocess.Popen[str] | None = None

    def stop(_signum: object = None, _frame: object = None) -> None:
        # Forwarded at once, from the handler itself (a kill takes no lock), instead of through KeyboardInterrupt,
        # which is raised wherever this loop happens to be; a terminal's Ctrl-C reaches the service too, and a
        # second SIGINT is harmless to it.
        requested.append(True)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # the service's own clean stop

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    proc = subprocess.Popen([str(Path(sys.executable).with_name("facegate")), "run", "--config",
                             str(demo / "facegate.toml")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if requested:  # stopped while the service was being started
        stop()
    timer = threading.Timer(args.duration, stop) if args.duration is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    announced = False
    for line in proc.stdout:
        if requested and not announced:
            print("demo: stopping (relay released, outbox flushed, offline announced)", flush=True)
            announced = True
        show(line)
    if timer is not None:
        timer.cancel()
    code = proc.wait()
    print(f"demo: stopped (exit {code})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
