"""Atomic file output: write to a temporary sibling, rename over the target only on success.

A failure mid-write (exception, KeyboardInterrupt) removes the temporary file, so a reader never sees a
truncated file under the final name. Finished outputs get the permissions a plain ``open()`` / ``mkdir`` would
give them under the process umask (``mkstemp``/``mkdtemp`` create 0600/0700).

A run killed outright (SIGKILL, power loss) cannot clean up: its temporary sibling stays behind. Temporary names
carry the writer's process id (``.NAME.tarq-<pid>-<random>.tmp``); the next write to the same path removes those
whose process is gone, and reports (without touching) any other leftover matching the pattern.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

log = logging.getLogger(__name__)

_TMP_TAG = "tarq-"


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only be read by setting it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the mode ``open()``/``mkdir`` would have: 0666 / 0777 minus the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temporary siblings of ``path`` left by killed tarq processes; return what was removed.

    Ours (``.NAME.tarq-<pid>-*.tmp``) whose process no longer exists are removed; other matches of
    ``.NAME.*.tmp`` (older tarq versions, or a live writer) are left alone and reported once."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return []
    ours = re.compile(rf"^\.{re.escape(path.name)}\.{_TMP_TAG}(\d+)-[^/]*\.tmp$")
    other = re.compile(rf"^\.{re.escape(path.name)}\.[^/]+\.tmp$")
    removed = []
    for entry in parent.iterdir():
        m = ours.match(entry.name)
        if m:
            pid = int(m.group(1))
            if pid != os.getpid() and not _pid_alive(pid):
                _remove(entry)
                removed.append(entry)
        elif other.match(entry.name):
            log.warning("%s: leftover temporary %s from an interrupted run (not removed: it may belong to a "
                        "running writer; delete it if none is running)", path, entry.name)
    if removed:
        log.warning("%s: removed %d temporary file(s) left by killed runs (%s)", path, len(removed),
                    ", ".join(e.name for e in removed[:3]))
    return removed


def _remove(entry: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink()


def _prefix(path: Path) -> str:
    return f".{path.name}.{_TMP_TAG}{os.getpid()}-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that wants a file name (GGUFWriter, savefig)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Yield an open file; ``path`` appears (fsynced) only if the block completes without an exception."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def make_temp_dir(out_dir: str | os.PathLike) -> Path:
    """An empty temporary directory beside ``out_dir`` (for a directory written as a whole and renamed into place)
    with the mode ``mkdir`` would give; stale ones of killed runs on the same path are cleaned first."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(out_dir), suffix=".tmp", dir=out_dir.parent))
    apply_umask(tmp, directory=True)
    return tmp


def publish_tree(tmp_dir: str | os.PathLike) -> None:
    """Apply the umask to every file and directory under ``tmp_dir`` (writers such as safetensors or tokenizers
    may create files with their own modes) before it is renamed into place."""
    tmp_dir = Path(tmp_dir)
    apply_umask(tmp_dir, directory=True)
    for root, dirs, files in os.walk(tmp_dir):
        for d in dirs:
            apply_umask(os.path.join(root, d), directory=True)
        for f in files:
            apply_umask(os.path.join(root, f))
