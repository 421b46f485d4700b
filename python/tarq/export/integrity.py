"""Checksums of exported model files: a ``sha256sum``-format sidecar written on export, checked by ``--verify``.

``tarq export`` writes ``MODEL.sha256`` beside ``MODEL`` (one line, ``<hex>  <file name>``, so
``sha256sum -c MODEL.sha256`` checks it too). The digest covers the whole file: header, vocabulary and every tensor's
bytes. ``tarq eval/transcribe --verify`` recomputes it before the runtime sees the file and refuses a file that
changed since export (bit rot, an interrupted copy, an edit): such corruption can leave a file that still parses and
then transcribes to garbage, which no structural check can notice.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .._atomic import atomic_write

SIDECAR_SUFFIX = ".sha256"
_CHUNK = 1 << 22
_cache: dict[tuple, str] = {}


def sidecar_path(model: str | os.PathLike) -> Path:
    p = Path(model)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, memoised on (path, size, mtime, inode) so repeated calls on an unchanged file are free."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _cache:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _cache[key] = h.hexdigest()
    return _cache[key]


def write_checksum(model: str | os.PathLike) -> Path:
    """Write ``MODEL.sha256`` (atomically) and return its path."""
    p = Path(model)
    side = sidecar_path(p)
    with atomic_write(side, "w", encoding="utf-8") as f:
        f.write(f"{file_sha256(p)}  {p.name}\n")
    return side


def read_checksum(model: str | os.PathLike) -> str:
    side = sidecar_path(model)
    if not side.is_file():
        raise FileNotFoundError(f"{model}: --verify needs the checksum file {side.name} written by tarq export "
                                f"(re-export the model, or drop --verify)")
    try:
        line = side.read_text(encoding="utf-8").strip().splitlines()[0]
        digest = line.split()[0].lower()
        int(digest, 16)
    except (IndexError, ValueError, UnicodeDecodeError):
        raise ValueError(f"{side}: not a sha256sum line (expected '<64 hex digits>  {Path(model).name}')") from None
    if len(digest) != 64:
        raise ValueError(f"{side}: not a sha256 digest ({len(digest)} hex digits)")
    return digest


def verify_checksum(model: str | os.PathLike) -> str:
    """Raise ValueError naming the file when its content no longer matches its sidecar; return the digest."""
    want = read_checksum(model)
    got = file_sha256(model)
    if got != want:
        raise ValueError(f"{model}: checksum mismatch (sha256 {got[:16]}…, {sidecar_path(model).name} says "
                         f"{want[:16]}…): the file changed or was corrupted after export")
    return got
