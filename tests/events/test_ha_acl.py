"""The broker ACL in docs/mqtt.md, taken from the page and loaded into a real Mosquitto: it does what it says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from support import ROOT
from support.broker import Mosquitto, find_mosquitto

from tools.wait import wait_for

USERS = {"facegate-front": "door-pw", "homeassistant": "ha-pw", "intruder": "x-pw"}


def documented_acl() -> str:
    page = (ROOT / "docs" / "mqtt.md").read_text()
    section = page[page.index("### Broker ACL (Mosquitto)"):]
    match = re.search(r"```\n(.*?)```", section, re.S)
    assert match, "no ACL code block under 'Broker ACL (Mosquitto)'"
    return match.group(1)


@pytest.fixture
def acl_broker() -> Iterator[Mosquitto]:
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if find_mosquitto() is None or not os.access(passwd, os.X_OK):
        pytest.skip("mosquitto and mosquitto_passwd are needed (the 'mosquitto' package)")
    server = Mosquitto()
    folder = server.config_path.parent
    (folder / "acl").write_text(documented_acl())
    pwfile = folder / "passwd"
    for i, (user, password) in enumerate(USERS.items()):
        subprocess.run([passwd, "-b", *(["-c"] if i == 0 else []), str(pwfile), user, password], check=True,
                       capture_output=True)
    # Started as root, mosquitto drops to its own user: it must be able to read these (a throwaway test folder).
    folder.chmod(0o755)
    for path in (pwfile, folder / "acl"):
        path.chmod(0o644)
    server.config_path.write_text(f"listener {server.port} {server.host}\nallow_anonymous false\n"
                                  f"password_file {pwfile}\nacl_file {folder / 'acl'}\npersistence false\n")
    try:
        server.start()
        yield server
    finally:
        server.close()


class Client:
    def __init__(self, server: Mosquitto, user: str, subscribe: str | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-{id(self)}")
        self.client.username_pw_set(user, USERS[user])
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.connect(server.host, server.port)
        self.client.loop_start()
        if subscribe:
            self.client.subscribe(subscribe, qos=1)
            assert self._ready.wait(5)

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def topics(self) -> set[str]:
        with self._lock:
            return {t for t, _ in self.messages}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_documented_acl(acl_broker: Mosquitto) -> None:
    door = Client(acl_broker, "facegate-front", "facegate/front/lock/set")
    ha = Client(acl_broker, "homeassistant", "facegate/#")
    intruder = Client(acl_broker, "intruder", "#")
    try:
        door.publish("facegate/front/status", '{"lockdown": false}')
        door.publish("homeassistant/device/facegate_front/config", "{}")
        ha.publish("facegate/front/lock/set", '{"via": "home_assistant"}')
        intruder.publish("facegate/front/lock/set", "intruder")
        assert wait_for(lambda: ("facegate/front/lock/set", b'{"via": "home_assistant"}') in door.messages)
        assert wait_for(lambda: "facegate/front/status" in ha.topics())
        time.sleep(0.5)
        assert [p for _, p in door.messages] == [b'{"via": "home_assistant"}']  # not the intruder's
        assert "facegate/front/lock/set" not in ha.topics()  # HA may send the code, not read others' codes
        assert intruder.messages == []  # reads nothing: neither states nor codes
    finally:
        for c in (door, ha, intruder):
            c.close()
