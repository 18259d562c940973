"""Home Assistant unlock codes: hashes, the config that holds them, the CLI that makes them, the guessing brake."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from facegate.cli import main
from facegate.config import CommandsConfig, ConfigError, parse_config
from facegate.events.commands import REASONS, CommandRejected, CommandVerifier
from facegate.events.ha_codes import CodeBook, GuessBrake, hash_code, parse_code_hash

NOW = 1_714_564_800.0
CODE = "482916"


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


def ha(action: str = "unlock", code: str | None = CODE, ts: float = NOW, nonce: str = "ha-1-2-3-4",
       **extra: Any) -> bytes:
    body: dict[str, Any] = {"via": "home_assistant", "action": action, "ts": ts, "nonce": nonce, **extra}
    if code is not None:
        body["code"] = code
    return json.dumps(body).encode()


def reason(verifier: CommandVerifier, payload: bytes, retained: bool = False) -> str:
    with pytest.raises(CommandRejected) as info:
        verifier.verify(payload, retained=retained)
    assert info.value.reason in REASONS
    return info.value.reason


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(tmp_path: Path, clock: Clock) -> CommandVerifier:
    config = CommandsConfig(home_assistant_codes=[hash_code("111111"), hash_code(CODE)])
    return CommandVerifier(config, "front", tmp_path / "nonces.db", clock=clock)


def test_hash_round_trip_and_salting() -> None:
    a, b = hash_code(CODE), hash_code(CODE)
    assert a != b and a.startswith("scrypt$16384$8$1$")  # salted: equal codes do not give equal hashes
    assert parse_code_hash(a).matches(CODE) and not parse_code_hash(a).matches("482917")
    assert CodeBook([parse_code_hash(a)]).matches(CODE)
    with pytest.raises(ValueError):
        hash_code("12")


@pytest.mark.parametrize("bad", ["", "482916", "scrypt$16384$8$1$c2FsdA", "scrypt$16384$8$1$!!$AAAA",
                                 "scrypt$1000$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
                                 "bcrypt$16384$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA"])
def test_a_bad_hash_stops_start_naming_the_key(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"commands\.home_assistant_codes"):
        parse_config({"commands": {"home_assistant_codes": [bad]}})


def test_hashes_file(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "codes"
    path.write_text(f"# front door\n{hash_code(CODE)}  # Ada\n\n")
    verifier = CommandVerifier(CommandsConfig(home_assistant_code_hashes_file=path), "front", tmp_path / "n.db",
                               clock=clock)
    assert verifier.home_assistant_mode and verifier.verify(ha(), retained=False).action == "unlock"
    path.write_text("scrypt$broken\n")
    with pytest.raises(ConfigError, match=r"home_assistant_code_hashes_file: .*codes:1"):
        CommandVerifier(CommandsConfig(home_assistant_code_hashes_file=path), "front", tmp_path / "n.db")
    with pytest.raises(ConfigError, match="cannot read"):
        CommandVerifier(CommandsConfig(home_assistant_code_hashes_file=tmp_path / "absent"), "front",
                        tmp_path / "n.db")
    with pytest.raises(ConfigError, match="home_assistant_code_format"):
        parse_config({"commands": {"home_assistant_code_format": "[0-9"}})


def test_checks_in_order(verifier: CommandVerifier, clock: Clock) -> None:
    assert reason(verifier, ha(nonce="retained-1"), retained=True) == "retained"
    assert reason(verifier, ha(action="explode")) == "unknown_action"
    assert reason(verifier, ha(nonce="short")) == "malformed"
    assert reason(verifier, ha(ts="now")) == "malformed"  # type: ignore[arg-type]
    assert reason(verifier, ha(ts=10**400)) == "malformed"
    assert reason(verifier, ha(code=123)) == "malformed"  # type: ignore[arg-type]
    assert reason(verifier, ha(code=None)) == "bad_code"  # unlock always needs a code
    assert reason(verifier, ha(code="000000", nonce="wrong-0001")) == "bad_code"
    assert reason(verifier, ha(ts=NOW - 31, nonce="stale-0001")) == "expired"
    assert reason(verifier, ha(ts=NOW + 31, nonce="future-001")) == "expired"
    command = verifier.verify(ha(nonce="good-00001"), retained=False)
    assert (command.action, command.nonce, "code" in command.raw) == ("unlock", "good-00001", False)
    assert reason(verifier, ha(nonce="good-00001")) == "replayed"
    assert verifier.verify(ha("lock", code="111111", nonce="good-00002"), retained=False).action == "lock"
    # The switch carries no code: lockdown only, and only with home_assistant_lockdown.
    assert verifier.verify(ha("lockdown_on", code=None, nonce="switch-001"), retained=False).action == "lockdown_on"


def test_lockdown_without_a_code_needs_the_switch_enabled(tmp_path: Path, clock: Clock) -> None:
    config = CommandsConfig(home_assistant_codes=[hash_code(CODE)], home_assistant_lockdown=False)
    verifier = CommandVerifier(config, "front", tmp_path / "n.db", clock=clock)
    assert not verifier.home_assistant_lockdown
    assert reason(verifier, ha("lockdown_on", code=None)) == "bad_code"
    assert verifier.verify(ha("lockdown_off", nonce="with-code-1"), retained=False).action == "lockdown_off"


def test_without_the_mode_a_code_command_is_unsigned(tmp_path: Path) -> None:
    verifier = CommandVerifier(CommandsConfig(hmac_key="00" * 32), "front", tmp_path / "n.db")
    assert not verifier.home_assistant_mode
    assert reason(verifier, ha()) == "unsigned"


def test_wrong_codes_are_braked(tmp_path: Path, clock: Clock) -> None:
    ticks = [0.0]
    brake = GuessBrake(burst=3, refill_seconds=60, clock=lambda: ticks[0])
    verifier = CommandVerifier(CommandsConfig(home_assistant_codes=[hash_code(CODE)]), "front", tmp_path / "n.db",
                               clock=clock)
    verifier.home_assistant_codes.brake = brake
    for i in range(3):
        assert reason(verifier, ha(code="000000", nonce=f"guess-{i:04d}")) == "bad_code"
    # Braked: even the right code is not checked now (a guesser learns nothing).
    assert reason(verifier, ha(nonce="right-0001")) == "too_many_attempts"
    ticks[0] += 61
    assert verifier.verify(ha(nonce="right-0002"), retained=False).action == "unlock"  # one token back
    assert reason(verifier, ha(code="000000", nonce="guess-0100")) == "bad_code"
    assert reason(verifier, ha(code="000000", nonce="guess-0101")) == "too_many_attempts"


def test_cli_code_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdin", io.StringIO(CODE + "\n"))
    assert main(["code", "hash"], out=out, err=err) == 0
    digest = json.loads(out.getvalue())["hash"]
    assert parse_code_hash(digest).matches(CODE) and "home_assistant_codes" in err.getvalue()
    assert CODE not in out.getvalue() + err.getvalue()
    for bad in ("12\n", "abcdef\n"):  # too short; not what the default code_format lets HA send
        monkeypatch.setattr("sys.stdin", io.StringIO(bad))
        assert main(["code", "hash"], out=io.StringIO(), err=err) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("abcdef\n"))
    assert main(["code", "hash", "--code-format", ""], out=io.StringIO(), err=io.StringIO()) == 0


def test_cli_code_hash_refuses_a_bad_code_format(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(CODE + "\n"))
    with pytest.raises(SystemExit) as exc:  # argparse's usage error, not a re.error traceback
        main(["code", "hash", "--code-format", "[0-9"], out=io.StringIO(), err=io.StringIO())
    assert exc.value.code == 2 and "--code-format" in capsys.readouterr().err


def test_the_brake_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    """A restart (a power cut, an update, a crash) must not hand a guesser a fresh burst of guesses."""
    config = CommandsConfig(home_assistant_codes=[hash_code(CODE)])
    state = tmp_path / "state"
    first = CommandVerifier(config, "front", state / "command_nonces.db", clock=clock)
    for i in range(5):
        assert reason(first, ha(code="000000", nonce=f"guess-{i:04d}")) == "bad_code"
    assert reason(first, ha(code="000000", nonce="guess-0005")) == "too_many_attempts"
    first.close()

    again = CommandVerifier(config, "front", state / "command_nonces.db", clock=clock)  # the restarted door
    assert reason(again, ha(code="000000", nonce="guess-0006")) == "too_many_attempts"
    assert reason(again, ha(nonce="right-0001")) == "too_many_attempts"  # not even the right code is checked
    again.close()
    brake_file = state / "ha_code_brake.json"
    assert brake_file.stat().st_mode & 0o777 == 0o600

    # Time that passed while the door was down refills it (wall time: the monotonic clock restarts at boot).
    saved = json.loads(brake_file.read_text())
    brake_file.write_text(json.dumps({**saved, "wall_ts": saved["wall_ts"] - 61}))
    later = CommandVerifier(config, "front", state / "command_nonces.db", clock=clock)
    assert later.verify(ha(nonce="right-0002"), retained=False).action == "unlock"
    later.close()

    brake_file.write_text("{not json")  # a damaged file: start braked, not with a fresh burst
    damaged = CommandVerifier(config, "front", state / "command_nonces.db", clock=clock)
    assert reason(damaged, ha(nonce="right-0003")) == "too_many_attempts"
    damaged.close()
