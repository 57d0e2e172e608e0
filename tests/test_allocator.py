"""steplens.allocator: freed memory stays in the process once keep_freed_memory ran (glibc)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# in a fresh process: allocate and free 64 MB, then ask glibc how much free memory it still holds
PROBE = textwrap.dedent("""
    import ctypes, json, sys
    from steplens.allocator import allocator_state, keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    kept = keep_freed_memory()
    buf = bytearray(64 << 20)
    del buf
    print(json.dumps({"kept": kept, "state": allocator_state(), "free_held_mb": libc.mallinfo2().fordblks / 2**20}))
""")


def _probe(env: dict[str, str]) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env={**os.environ, **env}, check=True)
    return json.loads(out.stdout)


def _glibc_with_mallinfo2() -> bool:
    import ctypes

    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


needs_glibc = pytest.mark.skipif(not (sys.platform.startswith("linux") and _glibc_with_mallinfo2()),
                                 reason="glibc >= 2.33 only (mallinfo2)")


@needs_glibc
def test_freed_memory_is_kept_only_when_asked():
    kept = _probe({"STEPLENS_MALLOC": ""})
    assert kept["kept"] is True and kept["state"] == "kept"
    assert kept["free_held_mb"] >= 60  # the 64 MB block went back to the heap, not to the OS
    off = _probe({"STEPLENS_MALLOC": "default"})
    assert off["kept"] is False and off["state"] == "default"
    assert off["free_held_mb"] < 16  # glibc's default: a block that large is mmapped and unmapped


@needs_glibc
def test_the_cli_sets_it(tmp_path):
    code = "from typer.testing import CliRunner; from steplens.cli import app; from steplens.allocator import allocator_state;" \
           "r = CliRunner().invoke(app, ['tasks', 'list']); assert r.exit_code == 0, r.output; print(allocator_state())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "STEPLENS_MALLOC": ""})
    assert out.stdout.strip().splitlines()[-1] == "kept"
