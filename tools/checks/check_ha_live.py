#!/usr/bin/env python3
"""Check the demo door against a real, running Home Assistant (run as root; not part of ``make test``).

Home Assistant 2026 needs Python 3.13, so it runs in a cached Debian trixie root filesystem (``debootstrap``,
native amd64, no emulation) under ``build/ha-rootfs`` with a venv at ``/opt/ha``. This script:

1. prepares that chroot once (debootstrap, venv, ``pip install homeassistant`` at the newest release that
   installs, plus the Python requirements of the few integrations it loads);
2. starts a private Mosquitto on a free loopback port (the host's binary, tools/mosquitto.py);
3. starts Home Assistant in the chroot (``hass -c``, HTTP on 127.0.0.1 only, a minimal configuration: no
   ``default_config``, so no cloud, analytics, updater, zeroconf or other integration that reaches out),
   onboards a user through the onboarding API for a token and adds the MQTT integration through the
   config-flow API;
4. runs the demo door (``tools/demo.py --duration``, mock pins) twice against that broker: with the default
   read-only lock, then with the opt-in Home Assistant code mode (``[commands] home_assistant_codes``, a hash from
   ``facegate code hash``);
5. reads back through HA's REST API what the door created, calls ``lock.unlock`` with the right and a wrong code,
   turns the lockdown switch on and off, watches the door's MQTT events, and greps HA's log.

It prints the entities (entity_id, state, key attributes) and PASS/FAIL per check, and exits 1 on a failure.
``--keep`` leaves the HA config folder (with its ``home-assistant.log``) for a look afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from tools import ROOT
from tools.mosquitto import Mosquitto
from tools.net import free_port
from tools.wait import wait_for

DEFAULT_ROOTFS = ROOT / "build" / "ha-rootfs"
VENV = "/opt/ha"  # inside the chroot
STAMP = VENV + "/.facegate-ready"  # holds the installed HA version
DEVICE = "demo-door"  # tools/demo.py's device_id
CODE = "246810"
WRONG_CODE = "135799"
# Integrations Home Assistant loads with our configuration.yaml (and what they import): their requirements are
# installed at prepare time, and hass runs with --skip-pip, so it never reaches out to install anything.
# HA 2026 always loads the frontend (without it, it starts in recovery mode), so its package is installed too.
INTEGRATIONS = ("frontend", "homeassistant", "persistent_notification", "logger", "system_log", "network", "isal",
                "http", "api", "auth", "config", "onboarding", "person", "backup", "mqtt", "lock", "binary_sensor",
                "sensor", "event", "switch", "diagnostics", "file_upload", "repairs", "websocket_api")
HOST_CA = "/etc/ssl/certs/facegate-host-ca-bundle.crt"  # inside the chroot: the host's trusted CAs, for pip
CHROOT_ENV = ["PATH=" + VENV + "/bin:/usr/local/bin:/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8",
              "PIP_DISABLE_PIP_VERSION_CHECK=1", "PIP_CERT=" + HOST_CA]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------------- the chroot
def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (deb822 ``URIs:`` or a one-line ``deb`` source)."""
    for path in sorted(Path("/etc/apt").glob("sources.list*")) + sorted(Path("/etc/apt/sources.list.d").glob("*")):
        if not path.is_file() or path.name.endswith((".disabled", ".save")) or "disabled" in path.name:
            continue
        for line in path.read_text(errors="replace").splitlines():
            m = re.match(r"\s*(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?\s", line + " ")
            if m and "security" not in m.group(1):
                return m.group(1)
    return "http://deb.debian.org/debian"


def in_chroot(rootfs: Path, *cmd: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess[str]:
    """Run in the chroot with a clean environment (``env -i``: no host PIP_*/PYTHON* variables leak in)."""
    return subprocess.run(["chroot", str(rootfs), "/usr/bin/env", "-i", *CHROOT_ENV, *cmd], check=check, text=True,
                          stdout=subprocess.PIPE if capture else None, stderr=subprocess.STDOUT if capture else None)


_REQUIREMENTS_SCRIPT = r"""
import json, sys
from pathlib import Path
import homeassistant
comp = Path(homeassistant.__file__).parent / "components"
todo, seen, reqs = list(sys.argv[1:]), set(), []
while todo:
    d = todo.pop()
    if d in seen or not (comp / d / "manifest.json").exists():
        continue
    seen.add(d)
    m = json.loads((comp / d / "manifest.json").read_text())
    reqs += m.get("requirements", [])
    todo += m.get("dependencies", [])
print("\n".join(sorted(set(reqs))))
"""


def prepare(rootfs: Path, version: str | None) -> str:
    """Build (once) the trixie rootfs and the HA venv; returns the installed HA version."""
    stamp = rootfs / STAMP.lstrip("/")
    wanted = " ".join(INTEGRATIONS)
    done = stamp.read_text().split("\n") if stamp.exists() else []
    if len(done) >= 2 and (version is None or done[0] == version) and done[1] == wanted:
        return done[0]
    if not (rootfs / "usr/bin/python3").exists():
        if shutil.which("debootstrap") is None:
            subprocess.run(["apt-get", "update"], check=True)
            subprocess.run(["apt-get", "install", "-y", "debootstrap"], check=True)
        mirror = debian_mirror()
        log(f"debootstrap trixie into {rootfs} from {mirror} (minutes)")
        shutil.rmtree(rootfs, ignore_errors=True)
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["debootstrap", "--variant=minbase",
                        "--include=python3,python3-venv,python3-dev,ca-certificates,build-essential,libffi-dev,"
                        "libssl-dev,zlib1g-dev,libjpeg-dev", "trixie", str(rootfs), mirror], check=True)
    # pip inside reaches PyPI as the host's pip does: the host's DNS and the CAs the host trusts (this machine may
    # sit behind a TLS-inspecting egress proxy whose CA only the host has).
    shutil.copy("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    host_ca = Path(os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
                   or "/etc/ssl/certs/ca-certificates.crt")
    shutil.copy(host_ca, rootfs / HOST_CA.lstrip("/"))
    if not (rootfs / VENV.lstrip("/") / "bin/pip").exists():
        in_chroot(rootfs, "python3", "-m", "venv", VENV)
        in_chroot(rootfs, VENV + "/bin/pip", "install", "-q", "-U", "pip", "wheel")
    if version is None and done:
        version = done[0]  # installed before; only the integrations' requirements changed
    if version is None:
        out = in_chroot(rootfs, VENV + "/bin/pip", "index", "versions", "homeassistant", capture=True).stdout
        m = re.search(r"homeassistant \(([^)]+)\)", out)
        if not m:
            raise SystemExit(f"pip index versions homeassistant gave no version:\n{out}")
        version = m.group(1)
    log(f"pip install homeassistant=={version} in the chroot (minutes)")
    in_chroot(rootfs, VENV + "/bin/pip", "install", "-q", f"homeassistant=={version}")
    reqs = in_chroot(rootfs, VENV + "/bin/python", "-c", _REQUIREMENTS_SCRIPT, *INTEGRATIONS,
                     capture=True).stdout.split()
    constraints = VENV + "/lib/python3.13/site-packages/homeassistant/package_constraints.txt"
    log(f"pip install the requirements of {len(INTEGRATIONS)} integrations: {' '.join(reqs)}")
    if reqs:
        in_chroot(rootfs, VENV + "/bin/pip", "install", "-q", "-c", constraints, *reqs)
    stamp.write_text(f"{version}\n{wanted}\n")
    return version


@contextlib.contextmanager
def proc_mounted(rootfs: Path) -> Iterator[None]:
    """/proc in the chroot while HA runs (psutil, system info); /sys and /dev are not mounted."""
    target = rootfs / "proc"
    mounted = os.path.ismount(target)
    if not mounted:
        subprocess.run(["mount", "-t", "proc", "proc", str(target)], check=True)
    try:
        yield
    finally:
        if not mounted:
            subprocess.run(["umount", "-l", str(target)], check=False)


# --------------------------------------------------------------------------------------------------- helpers

# Home Assistant not answering (yet): a wait on its API counts these as "not yet" rather than failing.
HA_DOWN = (OSError, urllib.error.URLError, ValueError)


@dataclass
class Seen:
    """What the door published (events and retained state), recorded by a host-side paho subscriber."""

    events: list[dict[str, Any]] = field(default_factory=list)
    lock_states: list[str] = field(default_factory=list)
    lock_set: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, type_: str, since: int = 0) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events[since:] if e.get("type") == type_]


def subscribe(port: int) -> tuple[Any, Seen]:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    seen = Seen()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        text = msg.payload.decode("utf-8", "replace")
        with seen.lock:
            if msg.topic.endswith("/events"):
                with contextlib.suppress(ValueError):
                    seen.events.append(json.loads(text))
            elif msg.topic.endswith("/lock/state"):
                seen.lock_states.append(text)
            elif msg.topic.endswith("/lock/set"):
                with contextlib.suppress(ValueError):
                    seen.lock_set.append({"retain": msg.retain, **json.loads(text)})

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="facegate-ha-live-check")
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(f"facegate/{DEVICE}/#", qos=1)
    client.loop_start()
    return client, seen


# --------------------------------------------------------------------------------------------------- Home Assistant
CONFIGURATION_YAML = """\
# Written by tools/checks/check_ha_live.py: the least HA that runs MQTT discovery and the REST API, on loopback only.
# No default_config: nothing here reaches out (no cloud, analytics, updater, zeroconf/ssdp/dhcp, met, ...).
homeassistant:
  name: facegate live check
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: DE
  language: en
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
auth:
config:
onboarding:
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
"""


class HomeAssistant:
    def __init__(self, rootfs: Path, config_dir: Path) -> None:
        self.rootfs = rootfs
        self.config_dir = config_dir  # inside rootfs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.ignored: list[tuple[int, int]] = []
        self.earlier_log = ""  # the log of runs before a restart (HA rolls its log file over at start)
        (config_dir / "configuration.yaml").write_text(CONFIGURATION_YAML.format(port=self.port))
        self.log_path = config_dir / "home-assistant.log"
        self.console = (config_dir / "console.log").open("a")
        self.proc = self.launch()

    def launch(self) -> subprocess.Popen[bytes]:
        inner = "/" + str(self.config_dir.relative_to(self.rootfs))
        return subprocess.Popen(
            ["chroot", str(self.rootfs), "/usr/bin/env", "-i", *CHROOT_ENV, VENV + "/bin/hass", "-c", inner,
             "--skip-pip", "--log-file", inner + "/home-assistant.log"],
            stdout=self.console, stderr=subprocess.STDOUT, start_new_session=True)

    def restart(self, timeout: float) -> None:
        """Stop and start HA on the same config (user, token, MQTT entry, entity registry all kept)."""
        self.stop()
        self.earlier_log += self.log_text()
        self.ignored = []
        self.console = (self.config_dir / "console.log").open("a")
        self.proc = self.launch()
        wait_for(lambda: self._alive() and self.request("GET", "/api/", timeout=5), timeout,
                 "Home Assistant's API after its restart", 1, ignore=HA_DOWN)

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"hass exited ({self.proc.returncode}); see {self.config_dir}/console.log")
        return True

    def request(self, method: str, path: str, body: Any = None, *, form: bool = False, auth: bool = True,
                timeout: float = 30) -> Any:
        data = None
        headers = {}
        if body is not None:
            if form:
                data = urllib.parse.urlencode(body).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    def start(self, broker_port: int, timeout: float) -> None:
        def up() -> bool:
            return self._alive() and isinstance(self.request("GET", "/api/onboarding", auth=False, timeout=5), list)

        wait_for(up, timeout, "Home Assistant's HTTP API", 1, ignore=HA_DOWN)
        client_id = self.url + "/"
        code = self.request("POST", "/api/onboarding/users", {
            "client_id": client_id, "name": "check", "username": "check", "password": "facegate-check-1",
            "language": "en"}, auth=False)["auth_code"]
        self.token = self.request("POST", "/auth/token", {
            "grant_type": "authorization_code", "code": code, "client_id": client_id}, form=True,
            auth=False)["access_token"]
        flow = self.request("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        for _ in range(4):  # a menu (if any) leads to the broker form
            if flow.get("type") == "menu":
                option = next(o for o in flow["menu_options"] if "broker" in o)
                flow = self.request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
                                    {"next_step_id": option})
            elif flow.get("type") == "form":
                flow = self.request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
                                    {"broker": "127.0.0.1", "port": broker_port})
            else:
                break
        if flow.get("type") != "create_entry":
            raise SystemExit(f"MQTT config flow did not create an entry: {flow}")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_text(self) -> str:
        """HA's log without the spans in ``ignored`` (byte offsets)."""
        data = self.log_path.read_bytes() if self.log_path.exists() else b""
        for start, end in sorted(self.ignored, reverse=True):
            data = data[:start] + data[end:]
        return self.earlier_log + data.decode(errors="replace")

    def version(self) -> str:
        return str(self.request("GET", "/api/config")["version"])

    def template(self, text: str) -> str:
        req = urllib.request.Request(self.url + "/api/template", data=json.dumps({"template": text}).encode(),
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return str(resp.read().decode())

    def states(self) -> dict[str, dict[str, Any]]:
        """The door's entities: those of the MQTT integration (the only MQTT device on this private broker)."""
        ids = json.loads(self.template("{{ integration_entities('mqtt') | list | tojson }}"))
        return {s["entity_id"]: s for s in self.request("GET", "/api/states") if s["entity_id"] in ids}

    def device(self, entity_id: str) -> dict[str, Any]:
        keys = ("name", "model", "manufacturer", "sw_version", "hw_version", "serial_number")
        body = ", ".join(f"'{k}': device_attr(device_id('{entity_id}'), '{k}')" for k in keys)
        return dict(json.loads(self.template("{{ {" + body + "} | tojson }}")))

    def call(self, domain: str, service: str, data: dict[str, Any]) -> tuple[int, str]:
        try:
            self.request("POST", f"/api/services/{domain}/{service}", data)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")[:300]
        return 200, ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.console.close()


class PeerWatch:
    """Samples (``ss``, every 0.2 s) the sockets of the hass process: every peer it talks to off loopback.

    Sampling can miss a socket that lives less than 0.2 s, so this is evidence, not proof; the minimal
    configuration (no integration that reaches out) is what keeps HA local.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peers: set[str] = set()
        self.sockets = 0  # hass's sockets seen at all (loopback included): shows the sampler works
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tag = f"pid={self.pid},"
        while not self._stop.wait(0.2):
            out = subprocess.run(["ss", "-tunapH"], capture_output=True, text=True).stdout
            for line in out.splitlines():
                cols = line.split()
                if tag not in line or len(cols) < 6 or cols[1] == "LISTEN":
                    continue
                self.sockets += 1
                host = cols[5].rsplit(":", 1)[0].strip("[]")
                if host not in ("*", "0.0.0.0", "::") and not host.startswith(("127.", "::1", "::ffff:127.")):
                    self.peers.add(f"{cols[0]} {cols[5]}")

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(5)
        return self.peers


# --------------------------------------------------------------------------------------------------- the door
class Door:
    """tools/demo.py (mock pins, looping replay) for a bounded time, on the private broker."""

    def __init__(self, broker_port: int, workdir: Path, duration: float, extra: str | None) -> None:
        cmd = [sys.executable, str(ROOT / "tools" / "demo.py"), "--host", "127.0.0.1", "--port", str(broker_port),
               "--duration", str(duration), "--dir", str(workdir / "demo")]
        workdir.mkdir(parents=True, exist_ok=True)
        if extra:
            (workdir / "extra.toml").write_text(extra)
            cmd += ["--extra-config", str(workdir / "extra.toml")]
        self.log_path = workdir / "demo.log"
        # SIGINT back to its default in the child: a shell's background job starts with it ignored, and Python
        # then never raises KeyboardInterrupt, so the demo could not be stopped cleanly. Own process group, so
        # that a demo that does not stop is killed together with its service.
        self.proc = subprocess.Popen(cmd, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT,
                                     preexec_fn=_default_sigint, start_new_session=True)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the demo forwards it: relay released, offline announced
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def code_hash(code: str) -> str:
    out = subprocess.run([str(Path(sys.executable).with_name("facegate")), "code", "hash"], input=code,
                         capture_output=True, text=True, check=True).stdout
    return str(json.loads(out)["hash"])


# --------------------------------------------------------------------------------------------------- checks
class Report:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, bool(ok), detail))
        print(f"  {'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else ""), flush=True)
        return bool(ok)

    @property
    def failed(self) -> int:
        return sum(not ok for _n, ok, _d in self.results)


KEY_ATTRIBUTES = ("device_class", "unit_of_measurement", "event_type", "event_types", "code_format", "person_id",
                  "ts", "similarity", "ok", "reason")


def table(states: dict[str, dict[str, Any]]) -> str:
    rows = []
    for eid in sorted(states):
        attrs = states[eid]["attributes"]
        shown = {k: attrs[k] for k in KEY_ATTRIBUTES if k in attrs and k != "event_types"}
        rows.append(f"  {eid:<48} {str(states[eid]['state'])[:26]:<26} {json.dumps(shown, default=str)[:110]}")
    return "\n".join(rows)


def iso_seconds(text: str) -> float:
    """Unix seconds from an ISO-8601 time (HA's ``+00:00`` or our ``Z``)."""
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def find(states: dict[str, dict[str, Any]], domain: str, suffix: str) -> dict[str, Any] | None:
    for eid, s in states.items():
        if eid.startswith(domain + ".") and eid.endswith(suffix):
            return s
    return None


# States that an entity may rightly have before anything happened (an event entity before its first event).
MAY_BE_UNKNOWN = ("event.",)


def common_checks(r: Report, ha: HomeAssistant, seen: Seen, mode: str) -> dict[str, dict[str, Any]]:
    """Waits for a grant in HA, then the checks both modes share; returns the states read."""
    def granted_in_ha() -> dict[str, dict[str, Any]] | None:  # a grant of this run (not a retained older one)
        st = ha.states()
        last = find(st, "sensor", "_last_access")
        grants = {g["ts"] for g in seen.of("access_granted")}
        return st if last and last["attributes"].get("ts") in grants else None

    try:
        states = wait_for(granted_in_ha, 60, "a grant to reach HA's Last access sensor", 1, ignore=HA_DOWN)
    except TimeoutError as exc:
        states = ha.states()
        r.check(f"[{mode}] last access sensor updates after the demo's grant", False, str(exc))
    else:
        last = find(states, "sensor", "_last_access")
        assert last is not None
        grants = seen.of("access_granted")
        lag = iso_seconds(last["last_updated"]) - iso_seconds(str(last["attributes"].get("ts")))
        r.check(f"[{mode}] last access sensor updates after the demo's grant",
                bool(grants) and last["attributes"].get("ts") in {g["ts"] for g in grants},
                f"{last['state']!r}, ts {last['attributes'].get('ts')}, in HA {lag:.2f} s after the grant")
    time.sleep(2)  # let every retained state and the first status settle
    states = ha.states()
    print(f"\n  entities in HA ({mode}):\n" + table(states) + "\n", flush=True)
    stuck = [eid for eid, s in states.items() if s["state"] in ("unavailable", "unknown")
             and not eid.startswith(MAY_BE_UNKNOWN)]
    r.check(f"[{mode}] no entity stuck unavailable/unknown", not stuck, ", ".join(stuck))
    def access_granted() -> dict[str, Any] | None:  # the looping demo alternates the astronaut and a stranger
        a = find(ha.states(), "event", "_access")
        return a if a and a["attributes"].get("event_type") == "access_granted" else None

    try:
        access = wait_for(access_granted, 30, "the Access event entity to show a grant", 0.3, ignore=HA_DOWN)
    except TimeoutError:
        access = find(ha.states(), "event", "_access")
    attrs = access["attributes"] if access else {}
    r.check(f"[{mode}] Access event entity shows the grant with its fields",
            attrs.get("event_type") == "access_granted" and attrs.get("person_id") == "astronaut"
            and "similarity" in attrs and None not in attrs.values(),
            json.dumps({k: v for k, v in attrs.items() if k != "event_types"}, default=str)[:200])
    any_id = next(iter(states), None)
    if any_id:
        dev = ha.device(any_id)
        r.check(f"[{mode}] device registered with serial and model",
                dev.get("serial_number") == DEVICE and bool(dev.get("model")) and dev.get("manufacturer") == "facegate",
                json.dumps(dev, default=str)[:200])
    return states


def read_only_checks(r: Report, ha: HomeAssistant, seen: Seen) -> None:
    states = common_checks(r, ha, seen, "read-only")
    lock_sensor = find(states, "binary_sensor", "_lock")
    r.check("[read-only] lock is a read-only binary_sensor (device_class lock)",
            lock_sensor is not None and lock_sensor["attributes"].get("device_class") == "lock"
            and lock_sensor["state"] in ("on", "off"), lock_sensor["entity_id"] if lock_sensor else "missing")
    commandable = [e for e in states if e.split(".")[0] in ("lock", "switch", "button")]
    r.check("[read-only] no lock, switch or button entity offered", not commandable, ", ".join(commandable))


def ha_mode_checks(r: Report, ha: HomeAssistant, seen: Seen) -> None:
    def have_lock() -> dict[str, dict[str, Any]] | None:
        st = ha.states()
        lk = find(st, "lock", "_lock")
        return st if lk and lk["state"] in ("locked", "unlocked") else None

    try:
        wait_for(have_lock, 60, "the HA-mode lock entity", 1, ignore=HA_DOWN)
    except TimeoutError as exc:
        r.check("[code mode] lock entity appears", False, str(exc))
        return
    states = common_checks(r, ha, seen, "code mode")
    lock = find(states, "lock", "_lock")
    assert lock is not None
    r.check("[code mode] lock is a lock entity asking for a code",
            bool(lock["attributes"].get("code_format")), f"{lock['entity_id']} code_format "
            f"{lock['attributes'].get('code_format')!r}")
    old = find(states, "binary_sensor", "_lock")
    r.check("[code mode] the read-only lock of the other mode was removed (discovery {\"p\": ...})",
            old is None, old["entity_id"] if old else "")
    lock_id = lock["entity_id"]

    # Wait until the lock is back to locked (the demo's own grant pulses the relay for 3 s).
    wait_for(lambda: ha.states().get(lock_id, {}).get("state") == "locked", 30, "the lock to read locked", 0.5,
             ignore=HA_DOWN)
    n = len(seen.events)
    status, body = ha.call("lock", "unlock", {"entity_id": lock_id, "code": CODE})
    accepted = wait_for_event(seen, "command_accepted", n, 10)
    unlocked = wait_for_event(seen, "door_unlocked", n, 10, reason="remote")
    relocked = wait_for_event(seen, "door_locked", n, 15)
    r.check("[code mode] lock.unlock with the right code pulses the relay",
            status == 200 and accepted is not None and unlocked is not None and relocked is not None,
            f"HTTP {status} {body}; command_accepted {bool(accepted)}, door_unlocked reason=remote "
            f"{bool(unlocked)}, then door_locked {bool(relocked)}")
    sent = [m for m in seen.lock_set if m.get("via") == "home_assistant" and m.get("action") == "unlock"]
    r.check("[code mode] HA published the command JSON, not retained",
            bool(sent) and not sent[-1]["retain"] and sent[-1].get("code") == CODE
            and isinstance(sent[-1].get("ts"), int) and str(sent[-1].get("nonce", "")).startswith("ha-"),
            json.dumps({k: v for k, v in sent[-1].items() if k != "code"} if sent else None))
    shown = wait_for(lambda: ha.states().get(lock_id, {}).get("state") == "unlocked", 10,
                     interval=0.3, fail=False, ignore=HA_DOWN)
    r.check("[code mode] HA shows the lock unlocked from the door's state", shown)
    wait_for(lambda: ha.states().get(lock_id, {}).get("state") == "locked", 30, "the lock to read locked again", 0.5,
             ignore=HA_DOWN)

    n = len(seen.events)
    status, body = ha.call("lock", "unlock", {"entity_id": lock_id, "code": WRONG_CODE})
    rejected = wait_for_event(seen, "command_rejected", n, 10, reason="bad_code")
    opened = [e for e in seen.of("door_unlocked", n) if e.get("reason") == "remote"]
    r.check("[code mode] a wrong code is refused and reported (command_rejected bad_code)",
            rejected is not None and not opened, f"HTTP {status}; rejected {bool(rejected)}, opened {len(opened)}")
    alert = wait_for(lambda: (find(ha.states(), "event", "_alert") or {}).get("attributes", {})
                     .get("reason") == "bad_code", 10,
                     interval=0.3, fail=False, ignore=HA_DOWN)
    r.check("[code mode] the Alert event entity shows the refusal", alert)
    mark = ha.log_size()
    status, body = ha.call("lock", "unlock", {"entity_id": lock_id, "code": "12"})
    time.sleep(0.5)
    ha.ignored.append((mark, ha.log_size()))  # HA logs its own refusal of this deliberately bad call
    r.check("[code mode] HA itself refuses a code that does not match code_format", status >= 400,
            f"HTTP {status}")

    switch = find(states, "switch", "_lockdown")
    if r.check("[code mode] lockdown switch offered", switch is not None):
        assert switch is not None
        sid = switch["entity_id"]
        ha.call("switch", "turn_on", {"entity_id": sid})
        on = wait_for(lambda: ha.states().get(sid, {}).get("state") == "on", 10,
                      interval=0.3, fail=False, ignore=HA_DOWN)
        ha.call("switch", "turn_off", {"entity_id": sid})
        off = wait_for(lambda: ha.states().get(sid, {}).get("state") == "off", 10,
                       interval=0.3, fail=False, ignore=HA_DOWN)
        r.check("[code mode] lockdown switch turns lockdown on and off at the door", on and off,
                f"on {on}, off {off}")


def restart_check(r: Report, ha: HomeAssistant, watches: list[PeerWatch]) -> None:
    """HA restarts while the door runs: retained discovery, availability and states bring every entity back."""
    before = ha.states()
    watches[-1].stop()
    ha.restart(300)
    watches.append(PeerWatch(ha.proc.pid))

    def back() -> dict[str, dict[str, Any]] | None:
        st = ha.states()
        missing = set(before) - set(st)
        bad = [e for e, v in st.items() if v["state"] in ("unavailable", "unknown") and not e.startswith("event.")]
        return st if st and not missing and not bad else None

    try:
        wait_for(back, 60, "every entity back with a state", 1, ignore=HA_DOWN)
        r.check("[code mode] after an HA restart every entity is back with a state", True, f"{len(before)} entities")
    except TimeoutError:
        st = ha.states()
        r.check("[code mode] after an HA restart every entity is back with a state", False,
                f"missing {sorted(set(before) - set(st))}, " + ", ".join(
                    f"{e}={v['state']}" for e, v in st.items() if v["state"] in ("unavailable", "unknown")))


def wait_for_event(seen: Seen, type_: str, since: int, timeout: float, **fields: Any) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in seen.of(type_, since):
            if all(e.get(k) == v for k, v in fields.items()):
                return e
        time.sleep(0.1)
    return None


def offline_check(r: Report, ha: HomeAssistant, mode: str) -> None:
    ok = wait_for(lambda: bool(ha.states()) and all(s["state"] == "unavailable"
                                                for s in ha.states().values()), 15,
                  interval=0.3, fail=False, ignore=HA_DOWN)
    r.check(f"[{mode}] every entity unavailable once the door stops (availability)", ok)


LOG_PROBLEM = re.compile(r"(WARNING|ERROR).*(mqtt|template|discovery|facegate|demo.door)", re.IGNORECASE)


def log_check(r: Report, ha: HomeAssistant) -> None:
    text = ha.log_text()
    problems = [line for line in text.splitlines() if LOG_PROBLEM.search(line)]
    r.check("HA log: no MQTT, template or discovery warning/error", not problems,
            " | ".join(p[:200] for p in problems[:5]))


# --------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rootfs", type=Path, default=DEFAULT_ROOTFS, help=f"chroot (default {DEFAULT_ROOTFS})")
    parser.add_argument("--ha-version", default=None, help="homeassistant release (default: newest that installs)")
    parser.add_argument("--prepare-only", action="store_true", help="build the chroot and venv, then stop")
    parser.add_argument("--door-seconds", type=float, default=180, help="how long each demo door run may last")
    parser.add_argument("--keep", action="store_true", help="keep HA's config folder (and its log)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C / kill -INT stop it, even in background
    if os.geteuid() != 0:
        raise SystemExit("run as root (debootstrap, chroot, mount -t proc)")
    rootfs = args.rootfs.resolve()
    version = prepare(rootfs, args.ha_version)
    log(f"Home Assistant {version} ready in {rootfs}")
    if args.prepare_only:
        return 0

    r = Report()
    work = Path(tempfile.mkdtemp(prefix="facegate-ha-live-"))
    config_dir = Path(tempfile.mkdtemp(prefix="ha-config-", dir=rootfs / "tmp"))
    broker = Mosquitto().start()
    client, seen = subscribe(broker.port)
    ha: HomeAssistant | None = None
    door: Door | None = None
    try:
        with proc_mounted(rootfs):
            ha = HomeAssistant(rootfs, config_dir)
            watches = [PeerWatch(ha.proc.pid)]
            log(f"Home Assistant starting on {ha.url}, broker 127.0.0.1:{broker.port}")
            ha.start(broker.port, timeout=300)
            log(f"Home Assistant {ha.version()} up, MQTT integration added")

            for mode, extra in (("read-only", None), ("code mode",
                                f'[commands]\nhome_assistant_codes = ["{code_hash(CODE)}"]\n')):
                log(f"door: demo, {mode}")
                seen.events.clear()
                door = Door(broker.port, work / mode.replace(" ", "-"), args.door_seconds, extra)
                try:
                    if mode == "read-only":
                        read_only_checks(r, ha, seen)
                    else:
                        ha_mode_checks(r, ha, seen)
                        restart_check(r, ha, watches)
                finally:
                    code = door.stop()
                    door = None
                r.check(f"[{mode}] door stopped cleanly", code == 0, f"exit {code}")
                offline_check(r, ha, mode)
            log_check(r, ha)
            peers = set().union(*(w.stop() for w in watches))
            seen_sockets = sum(w.sockets for w in watches)
            r.check("HA talked to nothing off loopback (sockets sampled every 0.2 s)", not peers and seen_sockets > 0,
                    ", ".join(sorted(peers)) or f"{seen_sockets} socket samples, all on loopback")
    finally:
        if door is not None:
            door.stop()
        if ha is not None:
            ha.stop()
        client.loop_stop()
        client.disconnect()
        broker.close()
        if args.keep:
            log(f"kept: HA config {config_dir}, door/broker logs {work}")
        else:
            shutil.rmtree(config_dir, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{len(r.results) - r.failed} passed, {r.failed} failed (Home Assistant {version})")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
