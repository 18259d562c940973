#!/usr/bin/env python3
"""Access-journal figures at full size (JSON), never as a test: fill, per-event cost, queries, pruning, disk.

The journal is filled with a door-like mix (grants, denials, unknown faces, door events; 500 people) spread
over the retention period, then each operation the console and the CLI use is timed (median of repeats).

    python tools/bench/bench_journal.py --events 1000000 --out /tmp/journal-bench
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from facegate.events.emitter import format_ts
from facegate.journal import Journal, JournalWriter
from facegate.privacy.keys import load_sealer

from tools import ROOT

DAY = 86_400.0


def door_event(i: int, ts: float) -> dict[str, Any]:
    kind = ("access_granted", "door_unlocked", "door_locked", "access_granted", "unknown_face",
            "access_denied", "door_opened", "door_closed")[i % 8]
    event: dict[str, Any] = {"event_id": f"bench-{i}", "seq": i, "ts": format_ts(ts), "device_id": "bench",
                             "type": kind}
    if kind in ("access_granted", "access_denied"):
        person = f"p{(i * 7919) % 500:03d}"
        event.update(person_id=person, name=f"Person {person}", similarity=0.71, frame="0001.jpg", track_id=i)
        if kind == "access_denied":
            event["reason"] = "schedule"
    elif kind == "unknown_face":
        event.update(best_similarity=0.2, frames=5, track_id=i)
    return event


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=None, help="folder for the journal (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--encrypt", action="store_true", help="seal the journal (facegate/privacy, a key file in --out)")
    args = ap.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="journal-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "journal.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    n = args.events
    now = time.time()
    step = 360 * DAY / n
    report: dict[str, Any] = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                              "python": platform.python_version(), "events": n}

    sealer = load_sealer("file", folder / "privacy.key", folder) if args.encrypt else None
    report["encrypted"] = sealer is not None
    journal = Journal(path, max_events=n, sealer=sealer)
    start = time.perf_counter()
    batch: list[dict[str, Any]] = []
    for i in range(n):
        batch.append(door_event(i, now - 360 * DAY + i * step))
        if len(batch) == 1000:
            journal.record_many(batch)
            batch = []
    if batch:
        journal.record_many(batch)
    fill = time.perf_counter() - start
    report["fill_seconds"] = round(fill, 1)
    report["fill_events_per_second"] = round(n / fill)
    sizes = {s: Path(str(path) + s).stat().st_size for s in ("", "-wal") if Path(str(path) + s).exists()}
    report["file_mib"] = round(sum(sizes.values()) / 2**20, 1)
    report["bytes_per_event"] = round(sum(sizes.values()) / n)

    # one event at the count limit: insert + one pruning step that deletes the oldest
    counter = iter(range(n, n + 10_000))
    report["record_one_at_limit_ms"] = median_ms(lambda: journal.record(door_event(next(counter), time.time())),
                                                 args.repeat * 5)
    writer = JournalWriter(journal, queue_events=100_000)
    sub = iter(range(n + 10_000, n + 20_000))
    report["submit_us"] = round(median_ms(lambda: writer.submit(door_event(next(sub), time.time())), 5000) * 1000, 2)
    writer.start()
    writer.stop()

    reader = Journal(path, readonly=True)
    since = now - DAY
    queries = {
        "newest_100": lambda: reader.query(limit=100),
        "type_access_denied_100": lambda: reader.query(types=["access_denied"], limit=100),
        "person_100": lambda: reader.query(person="p123", limit=100),
        "since_24h_100": lambda: reader.query(since=since, limit=100),
        "type_and_since_24h": lambda: reader.query(types=["access_granted"], since=since, limit=100),
        "count_all": lambda: reader.count(),
        "count_person": lambda: reader.count(person="p123"),
        "count_type": lambda: reader.count(types=["access_granted"]),
    }
    report["query_ms"] = {name: median_ms(fn, args.repeat) for name, fn in queries.items()}

    def page_10_deep() -> None:
        cursor = None
        for _ in range(10):
            page = reader.query(limit=100, before_id=cursor)
            cursor = page[-1]["journal_id"]

    report["query_ms"]["ten_pages_of_100"] = median_ms(page_10_deep, args.repeat)
    reader.close()

    config = folder / "bench.toml"
    config.write_text(f'state_dir = "{folder}"\n[privacy]\nencrypt = {str(args.encrypt).lower()}\n')
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "facegate.cli", "events", "--config", str(config), "--limit", "100"],
                   check=True, capture_output=True, env={"PYTHONPATH": str(ROOT / "device")})
    report["cli_events_100_seconds"] = round(time.perf_counter() - start, 2)

    journal.close()
    lowered = Journal(path, max_events=n - 5000, sealer=sealer)
    report["prune_step_500_ms"] = median_ms(lowered.prune_step, 10)
    start = time.perf_counter()
    persons = lowered.purge_person("p123")
    report["purge_person"] = {"events": persons, "seconds": round(time.perf_counter() - start, 2)}
    lowered.close()
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
