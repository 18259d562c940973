"""The console's threads lower themselves to nice +10, and say so once when a system call filter refuses it.

The refusal is real: the child process installs a seccomp filter (the kernel mechanism behind systemd's
SystemCallFilter=) that fails setpriority with EPERM, exactly what the unit did while @resources was denied.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

# __NR_setpriority and the audit architecture of the machines facegate runs on.
SECCOMP_ARCH = {"x86_64": (141, 0xC000003E), "aarch64": (140, 0xC00000B7)}

CHILD = textwrap.dedent("""
    import ctypes, json, logging, os, sys, threading

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                    ("k", ctypes.c_uint32)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]

    def deny_setpriority(nr, arch):
        ld, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
        allow, eperm = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
        code = [(ld, 0, 0, 4), (jeq, 0, 3, arch), (ld, 0, 0, 0), (jeq, 0, 1, nr), (ret, 0, 0, eperm),
                (ret, 0, 0, allow)]
        prog = Program(len(code), (Filter * len(code))(*[Filter(*c) for c in code]))
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
        assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0, ctypes.get_errno()  # PR_SET_SECCOMP, FILTER

    if sys.argv[1] == "deny":
        deny_setpriority(int(sys.argv[2]), int(sys.argv[3]))
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append({"level": r.levelname, "msg": r.getMessage()})
    logging.getLogger("facegate.web.priority").addHandler(handler)
    from facegate.web.priority import lower_this_thread
    nices = []

    def console_thread():
        lower_this_thread()
        nices.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    threads = [threading.Thread(target=console_thread) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"nices": nices, "records": records, "main": os.getpriority(os.PRIO_PROCESS, 0)}))
""")


def run_child(mode: str) -> dict[str, object]:
    nr, arch = SECCOMP_ARCH.get(platform.machine(), (0, 0))
    if mode == "deny" and not nr:
        pytest.skip(f"no seccomp numbers for {platform.machine()}")
    if sys.platform != "linux":
        pytest.skip("per-thread nice values are Linux's")
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(nr), str(arch)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def own_nice() -> int:
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    if nice >= 10:
        pytest.skip(f"pytest itself runs at nice {nice}: nothing left to lower")
    return nice


def test_console_threads_run_at_nice_10() -> None:
    nice = own_nice()
    result = run_child("allow")
    assert result["nices"] == [10, 10, 10, 10]
    assert result["main"] == nice  # only the console's threads, never the door's
    assert result["records"] == []


def test_a_refused_renice_is_one_warning_not_one_per_thread() -> None:
    nice = own_nice()
    result = run_child("deny")
    assert result["nices"] == [nice] * 4  # the filter really refused it
    records = result["records"]
    assert isinstance(records, list)
    assert [r["level"] for r in records] == ["WARNING"], records
    assert "setpriority" in records[0]["msg"] and "SystemCallFilter=setpriority" in records[0]["msg"]
