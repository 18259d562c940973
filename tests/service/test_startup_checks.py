"""What a newcomer meets before and at start: doctor checks the console and sync, start-up errors name the key
and the file, the service says where its console is and what is off, and a run without MQTT ends calmly.

Real parts throughout: the certificate is made by deploy/web-cert.sh (openssl), accounts by the console's
UserStore, the service is the real ``facegate run`` on a replay with mock pins.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from facegate.cli import main
from facegate.web.accounts import UserStore
from support import ROOT, write_image

from tools.net import free_port

FACEGATE = str(Path(sys.executable).with_name("facegate"))
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


def web_cert(folder: Path) -> tuple[Path, Path, str]:
    """deploy/web-cert.sh's pair in ``folder``, and the fingerprint the script printed."""
    out = subprocess.run(["bash", str(ROOT / "deploy" / "web-cert.sh"), str(folder)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    fingerprint = out.strip().splitlines()[-1].split("=", 1)[1]
    return folder / "web-cert.pem", folder / "web-key.pem", fingerprint


def write_config(tmp: Path, *, web: str = "", sync: str = "", liveness: bool = True) -> Path:
    frames = tmp / "frames"
    frames.mkdir(exist_ok=True)
    for i in range(3):
        write_image(frames / f"{i}.png", np.zeros((48, 64, 3), dtype=np.uint8))
    path = tmp / "facegate.toml"
    path.write_text(f'device_id = "newcomer"\nstate_dir = "{tmp / "state"}"\n[camera]\nsource = "replay:{frames}"\n'
                    f'fps = 30\n[door]\npin_factory = "mock"\n[mqtt]\nenabled = false\n'
                    f'[liveness]\nenabled = {"true" if liveness else "false"}\n{web}{sync}')
    return path


def web_section(port: int, cert: Path | None = None, key: Path | None = None) -> str:
    tls = f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n' if cert is not None else ""
    return f'[web]\nenabled = true\nbind = "127.0.0.1"\nport = {port}\n{tls}'


def doctor(config: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    out, err = io.StringIO(), io.StringIO()
    main(["doctor", "--config", str(config)], out=out, err=err)
    return {r["check"]: r for r in map(json.loads, out.getvalue().splitlines())}


def run_service(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FACEGATE, "run", "--config", str(config)], capture_output=True, text=True, timeout=180,
                          check=False)


def log_lines(stdout: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@needs_openssl
def test_doctor_checks_the_console_files_accounts_and_port(tmp_path: Path) -> None:
    port = free_port()
    missing = tmp_path / "nowhere" / "cert.pem"
    checks = doctor(write_config(tmp_path, web=web_section(port, missing, tmp_path / "nowhere" / "key.pem")))
    console = checks["console"]
    assert not console["ok"]
    assert f"web.tls_cert_file: cannot read {missing}" in console["detail"]
    assert "no admin account" in console["detail"] and "facegate user add" in console["fix"]

    cert, key, fingerprint = web_cert(tmp_path / "tls")
    UserStore(tmp_path / "state").add("ada", "admin", "correct horse battery")
    config = write_config(tmp_path, web=web_section(port, cert, key))
    console = doctor(config)["console"]
    assert console["ok"], console
    assert fingerprint in console["detail"]

    with socket.socket() as taken:  # something else holds the port
        taken.bind(("127.0.0.1", port))
        taken.listen()
        console = doctor(config)["console"]
    assert not console["ok"] and f"web.port: 127.0.0.1:{port} is in use" in console["detail"]

    # A key that is not the certificate's: named as a pair.
    _, other_key, _ = web_cert(tmp_path / "other")
    console = doctor(write_config(tmp_path, web=web_section(port, cert, other_key)))["console"]
    assert not console["ok"] and "not a PEM certificate and its private key" in console["detail"]


def test_doctor_checks_sync(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    assert doctor(write_config(tmp_path))["sync"]["ok"]
    sync = doctor(write_config(tmp_path, sync='[sync]\nurl = "https://files.example/g.bundle"\n'))["sync"]
    assert not sync["ok"] and "sync.public_keys is empty" in sync["detail"] and "keygen" in sync["fix"]
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                 serialization.PublicFormat.Raw)
    import base64

    key = base64.b64encode(raw).decode()
    sync = doctor(write_config(tmp_path, sync=f'[sync]\npublic_keys = ["{key}"]\nurl = "https://f.example/g"\n'))
    assert sync["sync"]["ok"] and "1 trusted key(s)" in sync["sync"]["detail"]


def test_run_with_a_missing_certificate_names_the_key_and_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "etc" / "web-cert.pem"
    proc = run_service(write_config(tmp_path, web=web_section(free_port(), missing, tmp_path / "etc" / "k.pem")))
    assert proc.returncode == 78, proc.stderr
    assert f"web.tls_cert_file: cannot read {missing}: No such file or directory" in proc.stderr


@needs_openssl
def test_start_logs_the_console_and_what_is_off_and_a_run_without_mqtt_ends_calmly(tmp_path: Path) -> None:
    cert, key, fingerprint = web_cert(tmp_path / "tls")
    port = free_port()
    proc = run_service(write_config(tmp_path, web=web_section(port, cert, key), liveness=False))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = log_lines(proc.stdout)
    said = {(r["level"], r["msg"]) for r in lines}
    assert ("info", f"console at https://127.0.0.1:{port}/ (certificate {cert}, SHA-256 fingerprint "
                    f"{fingerprint})") in said
    assert any(level == "warning" and msg.startswith("console: no admin account") for level, msg in said)
    assert any(level == "warning" and msg.startswith("liveness.enabled = false") for level, msg in said)
    # MQTT is off: the events stay in the outbox by design, which is no warning about delivery.
    assert not [m for _, m in said if "not yet delivered" in m]
    assert any(level == "info" and msg.startswith("MQTT is off:") and "kept in the outbox and the journal" in msg
               for level, msg in said)


@needs_openssl
def test_web_cert_sets_the_mode_only_on_a_folder_it_creates(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    os.chmod(mine, 0o755)
    web_cert(mine)
    assert stat.S_IMODE(mine.stat().st_mode) == 0o755
    made = tmp_path / "made"
    web_cert(made)
    assert stat.S_IMODE(made.stat().st_mode) == 0o750
