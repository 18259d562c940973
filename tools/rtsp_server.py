"""A real RTSP server (Debian's GStreamer gst-rtsp-server) serving an H.264 stream of image files, on loopback.

Used by the tests (tests/camera/test_camera_streams.py) and tools/bench/bench_camera.py as the IP camera. It needs
the system Python with GObject introspection (python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-ugly for
x264enc), so it runs as its own process under /usr/bin/python3, never inside the project's venv:

    /usr/bin/python3 tools/rtsp_server.py --port 8554 --frames FILE.rgb --size 1280x720 [--fps 10]
        [--user U --password P] [--stall-after SECONDS]

The frames of FILE.rgb (raw RGB, back to back, looped; tools/stream_servers.py writes them) are pushed live
through an appsrc at ``--fps``, each buffer stamped
with the pipeline's clock, so the RTP time stamps are the capture times a real camera would send. Every client
gets its own pipeline (not shared), so ``--stall-after`` stalls each connection that many seconds after it
started playing: the session stays open but no frame comes, like a camera whose encoder hung. Prints
``READY <port>`` on stdout once listening; binds to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def load_frames(path: Path, width: int, height: int) -> list[bytes]:
    """The frames of a raw RGB file (width x height x 3 bytes each, back to back: tools/stream_servers.py)."""
    size = width * height * 3
    data = path.read_bytes()
    if not data or len(data) % size:
        raise SystemExit(f"{path}: {len(data)} bytes is not a whole number of {width}x{height} RGB frames")
    return [data[i:i + size] for i in range(0, len(data), size)]


class Factory(GstRtspServer.RTSPMediaFactory):  # type: ignore[misc]
    def __init__(self, frames: list[bytes], width: int, height: int, fps: int, stall_after: float | None) -> None:
        super().__init__()
        self.frames, self.width, self.height, self.fps = frames, width, height, fps
        self.stall_after = stall_after
        self.set_shared(False)
        self.connect("media-configure", self._configure)

    def do_create_element(self, _url: object) -> Gst.Element:
        return Gst.parse_launch(
            "( appsrc name=src is-live=true format=time do-timestamp=true ! videoconvert ! video/x-raw,format=I420 ! "
            f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={self.fps} bitrate=4000 ! "
            "rtph264pay name=pay0 pt=96 config-interval=1 )")

    def _configure(self, _factory: object, media: GstRtspServer.RTSPMedia) -> None:
        src = media.get_element().get_child_by_name("src")
        src.set_property("caps", Gst.Caps.from_string(
            f"video/x-raw,format=RGB,width={self.width},height={self.height},framerate={self.fps}/1"))
        state = {"i": 0, "start": time.monotonic(), "alive": True}

        def push() -> bool:
            if not state["alive"]:
                return False
            if self.stall_after is not None and time.monotonic() - state["start"] > self.stall_after:
                return True  # stalled: the session stays, no frame comes
            data = self.frames[state["i"] % len(self.frames)]
            state["i"] += 1
            if src.emit("push-buffer", Gst.Buffer.new_wrapped(data)) != Gst.FlowReturn.OK:
                state["alive"] = False
                return False
            return True

        def unprepared(_media: object) -> None:
            state["alive"] = False

        media.connect("unprepared", unprepared)
        GLib.timeout_add(max(1, round(1000 / self.fps)), push)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", type=Path, required=True, help="raw RGB frames, back to back")
    parser.add_argument("--mount", default="/door")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--user", default=None)
    parser.add_argument("--password", default=None)
    parser.add_argument("--stall-after", type=float, default=None)
    args = parser.parse_args()
    Gst.init(None)
    width, height = (int(v) for v in args.size.split("x"))
    factory = Factory(load_frames(args.frames, width, height), width, height, args.fps, args.stall_after)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        permissions.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    print(f"READY {args.port}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
