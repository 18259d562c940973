"""SIGKILL during apply, again and again: the gallery is always exactly the old or exactly the new version.

Each round copies an old gallery, starts a process that verifies a big full bundle and applies it, and kills it
with SIGKILL at a random moment of the apply (it reports when verification is done; the kill lands uniformly
within 1.3 x the measured apply time after that, so some rounds die inside the transaction and some after the
commit). Then, as the next start would: open the file (SQLite rolls back or keeps the WAL), run
``PRAGMA integrity_check`` and compare version and counts with the two allowed states.

Processes come from a forkserver that has the sync modules preloaded: a fresh process in milliseconds, and not
a fork of this (possibly multi-threaded) pytest process.
"""

from __future__ import annotations

import multiprocessing
import random
import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path

from facegate.gallery.store import Gallery
from facegate.sync.apply import apply_file
from facegate.sync.export import export_bundle
from support.sync_keys import EMB, add_random_persons, keypair

ROUNDS = 60  # most of them land inside the transaction (about 3 in 4 while calibrated)
OLD_PERSONS, NEW_PERSONS = 1000, 1200


def state(path: Path) -> tuple[str, int, int, str | None]:
    db = sqlite3.connect(str(path))
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        version = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]
        persons = db.execute("SELECT COUNT(*) FROM persons").fetchone()[0]
        templates = db.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
        sha = db.execute("SELECT value FROM meta WHERE key = 'sync_bundle_sha256'").fetchone()
        orphans = db.execute("SELECT COUNT(*) FROM templates WHERE person_id NOT IN (SELECT id FROM persons)")
        assert orphans.fetchone()[0] == 0
        return version, persons, templates, None if sha is None else sha[0]
    finally:
        db.close()


def test_sigkill_during_apply_leaves_old_or_new(tmp_path: Path) -> None:
    key, _keys, public = keypair()
    # The door's current gallery (an earlier fleet version) and a bigger, different new version.
    old_path = tmp_path / "old.db"
    with Gallery(old_path) as door:
        add_random_persons(door, OLD_PERSONS, seed=1, templates_each=2)
    with Gallery(tmp_path / "admin.db") as admin:
        add_random_persons(admin, NEW_PERSONS, seed=2, templates_each=2, prefix="q")
        add_random_persons(admin, 10, seed=3, templates_each=2, prefix="r")
        bundle = export_bundle(admin, key)
    (tmp_path / "new.bundle").write_bytes(bundle.data)
    old_state = state(old_path)
    new_state = (str(bundle.version), NEW_PERSONS + 10, 2 * (NEW_PERSONS + 10), bundle.sha256)
    assert old_state[1:3] == (OLD_PERSONS, 2 * OLD_PERSONS)

    ctx = multiprocessing.get_context("forkserver")
    # pytest too: each child runs the parent's __main__ (the pytest script), cheap once pytest is loaded.
    ctx.set_forkserver_preload(["facegate.sync.apply", "numpy", "cryptography", "pytest"])

    def fresh_copy(work: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{work}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(old_path, work)

    def launch(work: Path) -> multiprocessing.process.BaseProcess:
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=apply_file, args=(str(work), str(tmp_path / "new.bundle"), [public], EMB,
                                                    64 << 20, child))
        proc.start()
        child.close()
        assert parent.poll(30), "the applier never reported verification"
        assert parent.recv() == "verified"
        return proc

    # Calibrate: one uninterrupted apply gives the new state and the time an apply takes here.
    work = tmp_path / "work.db"
    fresh_copy(work)
    proc = launch(work)
    started = time.perf_counter()
    proc.join(30)
    apply_seconds = time.perf_counter() - started
    assert proc.exitcode == 0
    assert state(work) == new_state

    def one_round(i: int) -> str:
        fresh_copy(work)
        proc = launch(work)
        time.sleep(random.Random(i).uniform(0, 1.3 * apply_seconds))
        proc.kill()  # SIGKILL
        proc.join(10)
        after = state(work)
        with Gallery(work) as g:  # ... and the next start opens it normally
            assert g.counts() == after[1:3]
        if after[:3] == old_state[:3] and after[3] == old_state[3]:
            return "old"
        if after == new_state:
            return "new"
        raise AssertionError(f"gallery is neither the old {old_state} nor the new {new_state}: {after}")

    outcomes = Counter(one_round(i) for i in range(ROUNDS))
    print(f"SIGKILL rounds: {dict(outcomes)}, apply {apply_seconds * 1000:.0f} ms")
    assert sum(outcomes.values()) == ROUNDS
    assert outcomes["old"] >= 1 and outcomes["new"] >= 1, outcomes
