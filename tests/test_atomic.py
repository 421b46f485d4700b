"""Atomic outputs respect the umask, and temporaries left by killed runs are cleaned by the next run."""
from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys

import pytest
import torch

from tarq._atomic import atomic_write, clean_stale_temps, current_umask, make_temp_dir


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask):
        os.umask(mask)
        return mask
    yield set_
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_and_dirs_get_the_umask_mode(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    with atomic_write(tmp_path / "f.bin") as f:
        f.write(b"x")
    assert _mode(tmp_path / "f.bin") == 0o666 & ~mask
    d = make_temp_dir(tmp_path / "D")
    assert _mode(d) == 0o777 & ~mask


def test_quantized_dir_and_result_json_respect_umask(tmp_path, umask):
    from tarq.qmodel import QuantizedTensor, save_quantized_model

    umask(0o027)
    qt = QuantizedTensor("q4_0", torch.zeros(2, 18, dtype=torch.uint8), (2, 32))
    out = save_quantized_model(tmp_path / "q", family="whisper", config={}, quantized={"w": qt}, floats={})
    assert _mode(out) == 0o750
    assert {_mode(p) for p in out.iterdir()} == {0o640}


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path, caplog):
    target = tmp_path / "m.bin"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)          # a process that has exited
    stale_file = tmp_path / f".m.bin.tarq-{pid}-abc.tmp"
    stale_file.write_bytes(b"half")
    live = tmp_path / f".m.bin.tarq-{os.getppid()}-xyz.tmp"   # a running process: not ours to delete
    live.write_bytes(b"busy")
    legacy = tmp_path / ".m.bin.k3j4h5.tmp"                    # pre-pid naming: reported, kept
    legacy.write_bytes(b"old")
    other = tmp_path / ".n.bin.tarq-1-a.tmp"                   # another output's temporary
    other.write_bytes(b"n")
    with caplog.at_level(logging.WARNING):
        with atomic_write(target) as f:
            f.write(b"new")
    assert target.read_bytes() == b"new"
    assert not stale_file.exists() and live.exists() and legacy.exists() and other.exists()
    assert "removed 1 temporary file" in caplog.text and ".m.bin.k3j4h5.tmp" in caplog.text


def test_stale_temp_dir_of_killed_quantize_is_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".D.tarq-{int(dead.stdout)}-q1.tmp"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "x").write_bytes(b"1")
    assert clean_stale_temps(tmp_path / "D") == [stale]
    assert not stale.exists()


def test_killed_writer_leaves_a_temporary_the_next_run_cleans(tmp_path):
    """A real kill -9 in the middle of a write, then a second writer on the same path."""
    code = ("import sys, time; from tarq._atomic import atomic_write\n"
            "with atomic_write(sys.argv[1]) as f:\n    f.write(b'partial'); f.flush(); print('ready', flush=True)\n"
            "    time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "m.bin")], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.kill()
    p.wait()
    left = [q.name for q in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".m.bin.tarq-") and not (tmp_path / "m.bin").exists()
    with atomic_write(tmp_path / "m.bin") as f:
        f.write(b"whole")
    assert [q.name for q in tmp_path.iterdir()] == ["m.bin"]
