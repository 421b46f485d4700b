"""Decoded hypotheses computed once: a content-addressed cache shared by ``tarq eval``, the benchmarks and the grid.

An entry is keyed by ``backend.cache_identity()`` (everything that can change the text: backend, runtime version,
sha256 of the model file or of a model directory's files, decoding policy and options) plus the sha256 of the
utterance's audio *file* and of tarq's audio-loading code. A rerun, or a larger grid, decodes only what is new.
A backend without ``cache_identity()`` (or returning None) is decoded without the cache, and that is logged.

Layout: ``ROOT/decodes/v1/<2 hex>/<sha256>.json`` holding ``{"text", "seconds", "audio_seconds", "identity",
"audio_sha256", "created"}``. ROOT is ``$TARQ_CACHE_DIR``, else tarq's cache root (``$TARQ_CACHE``,
``$XDG_CACHE_HOME/tarq``, ``~/.cache/tarq``). Writes go to a unique temporary file in the same folder and are
renamed over the entry, so concurrent writers (processes, Ray tasks, machines on a shared file system) never
leave a partial entry; two writers of one key write the same text. An unreadable entry is a miss (and is
rewritten). Entries are small (~300 bytes); delete the folder to reclaim space.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

ENV_VAR = "TARQ_CACHE_DIR"
LAYOUT = "v1"
_TARQ_ROOT = Path(__file__).resolve().parent.parent
# tarq code that turns an audio file into the samples a backend sees: part of every key
_AUDIO_CODE = ("data/audio.py", "data/resample.py")


def default_cache_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from tarq.paths import cache_root

    return cache_root()


# one definition of a file's digest, shared with the export checksums (memoised per process)
from tarq.export.integrity import file_sha256  # noqa: E402


def tree_sha256(paths: Sequence[str | os.PathLike], root: str | os.PathLike | None = None) -> str:
    """sha256 over (relative name, content hash) of files, in sorted order: the identity of a model directory."""
    h = hashlib.sha256()
    items = sorted((str(Path(p).relative_to(root)) if root else Path(p).name, p) for p in paths)
    for name, p in items:
        h.update(name.encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


# files of a model directory that cannot change a decode: diagnostics and benchmark sidecars
_NOT_MODEL_FILES = ("report.json",)


def model_dir_sha256(path: str | os.PathLike) -> str:
    """Identity of a model directory (float model, CTranslate2 dir, or a tarq quantized directory): every file
    except diagnostics (``report.json``) and hidden files."""
    root = Path(path)
    files = [p for p in root.rglob("*") if p.is_file() and p.name not in _NOT_MODEL_FILES
             and not p.name.endswith(".build.json") and not any(part.startswith(".")
                                                                 for part in p.relative_to(root).parts)]
    if not files:
        raise FileNotFoundError(f"{root}: no model files to hash")
    return tree_sha256(files, root)


def source_sha256(*relative: str) -> str:
    """sha256 of tarq source files (relative to the package root; folders mean all their .py files)."""
    files = []
    for rel in relative:
        p = _TARQ_ROOT / rel
        files += sorted(p.rglob("*.py")) if p.is_dir() else ([p] if p.is_file() else [])
    return tree_sha256(files, _TARQ_ROOT)


def audio_code_sha256() -> str:
    return source_sha256(*_AUDIO_CODE)


def cache_identity_of(backend) -> dict | None:
    """``backend.cache_identity()``, or None (do not cache) when the backend has none."""
    fn = getattr(backend, "cache_identity", None)
    if fn is None:
        return None
    ident = fn()
    if ident is not None and not isinstance(ident, dict):
        raise TypeError(f"{type(backend).__name__}.cache_identity() must return a dict or None")
    return ident


class DecodeCache:
    """Content-addressed store of decoded texts (see the module doc)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.dir = self.root / "decodes" / LAYOUT
        self._audio_code = audio_code_sha256()

    def key(self, identity: dict, audio_sha256: str) -> str:
        blob = json.dumps({"identity": identity, "audio_sha256": audio_sha256, "audio_code": self._audio_code},
                          sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, identity: dict, audio_sha256: str) -> dict | None:
        """The stored entry, or None on a miss (or an unreadable / mismatching entry)."""
        path = self._path(self.key(identity, audio_sha256))
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable decode-cache entry, decoding again (%s)", path, e)
            return None
        if (not isinstance(entry, dict) or not isinstance(entry.get("text"), str)
                or entry.get("audio_sha256") != audio_sha256
                or json.dumps(entry.get("identity"), sort_keys=True, default=str)
                != json.dumps(identity, sort_keys=True, default=str)):
            log.warning("%s: decode-cache entry does not match its key, decoding again", path)
            return None
        return entry

    def put(self, identity: dict, audio_sha256: str, text: str, seconds: float | None = None,
            audio_seconds: float | None = None) -> Path:
        """Store one decode atomically (unique temp file + rename; permissions follow the umask)."""
        path = self._path(self.key(identity, audio_sha256))
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"text": text, "seconds": seconds, "audio_seconds": audio_seconds, "identity": identity,
                 "audio_sha256": audio_sha256,
                 "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "x", encoding="utf-8") as f:
                json.dump(entry, f, ensure_ascii=False, default=str)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path


def decode_with_cache(backend, utterances: Sequence, cache: DecodeCache | None, decode=None, **decode_kw
                      ) -> tuple[list[str], list[float | None], list[float], int]:
    """(hyps, seconds, audio seconds, cache hits) in input order; only cache misses reach ``decode``
    (``tarq.eval.runner.decode_utterances`` by default), and their texts are stored."""
    if decode is None:
        from .runner import decode_utterances as decode
    identity = cache_identity_of(backend) if cache is not None else None
    if identity is None:
        if cache is not None:
            log.info("backend %s has no cache identity: decoding without the decode cache",
                     getattr(backend, "name", type(backend).__name__))
        hyps, secs, audio_secs = decode(backend, utterances, **decode_kw)
        return hyps, secs, audio_secs, 0
    n = len(utterances)
    hyps: list = [None] * n
    secs: list = [None] * n
    audio_secs: list = [0.0] * n
    hashes = [file_sha256(u.audio) for u in utterances]
    misses = []
    for i, h in enumerate(hashes):
        entry = cache.get(identity, h)
        if entry is None:
            misses.append(i)
        else:
            hyps[i], secs[i] = entry["text"], entry.get("seconds")
            audio_secs[i] = entry.get("audio_seconds") or utterances[i].duration or 0.0
    hits = n - len(misses)
    if hits:
        log.info("decode cache: %d of %d utterances already decoded (%s)", hits, n, cache.dir)
        # the backend reports empty transcripts when it decodes; a cached one must not come back silently
        empty = [utterances[i].id for i in range(n) if hyps[i] is not None and not str(hyps[i]).strip()]
        if empty:
            log.warning("%s: empty transcript for %d clip(s) from the decode cache (%s%s): the model produced no "
                        "words when they were decoded", getattr(backend, "name", "backend"), len(empty),
                        ", ".join(empty[:3]), " ..." if len(empty) > 3 else "")
    if misses:
        # longest first (as decode_utterances batches), stored chunk by chunk so a killed run keeps its work
        misses.sort(key=lambda i: -(utterances[i].duration or 0.0))
        chunk = max(32, int(getattr(backend, "batch_size", 0) or 0))
        progress = decode_kw.pop("progress", True)
        desc = decode_kw.pop("desc", "") or "decoding"
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(misses), desc=desc, unit="utt", leave=False)
        for start in range(0, len(misses), chunk):
            part = misses[start:start + chunk]
            m_hyps, m_secs, m_audio = decode(backend, [utterances[i] for i in part], progress=False, **decode_kw)
            for i, t, s, a in zip(part, m_hyps, m_secs, m_audio):
                hyps[i], secs[i], audio_secs[i] = t, s, a
                cache.put(identity, hashes[i], t, s, a)
            if bar is not None:
                bar.update(len(part))
        if bar is not None:
            bar.close()
    return hyps, secs, audio_secs, hits
