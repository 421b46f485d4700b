"""Speech corpora: manifest JSONL / TSV, the LibriSpeech tree, or a folder of audio files (+ optional .txt).

Accepted layouts (``load_dataset(path)``):
  * ``*.jsonl`` (or a directory holding ``manifest.jsonl``): one JSON object a line. Keys: audio path
    (``audio`` | ``audio_filepath`` | ``path`` | ``file``; relative to the manifest's folder), transcript
    (``text`` | ``transcript`` | ``sentence`` | ``transcription``; optional), ``id`` (optional, else the audio
    file's stem), ``duration`` (optional, seconds).
  * ``*.tsv`` (or a directory holding ``manifest.tsv``): a header row naming the columns, same names as above
    plus ``audio_path`` / ``wav`` / ``filename`` for audio and ``utt_id`` / ``utterance_id`` for the id.
    Common Voice TSVs work: ``path`` is also looked up under ``clips/``.
  * LibriSpeech: ``<root>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` (lines ``ID TEXT``) next to
    ``ID.flac`` (or ``.wav``).
  * A folder of audio files (searched recursively): a same-named ``.txt`` beside a file is its transcript;
    without one the utterance has ``text=None`` (e.g. for pseudo-labelling by the caller).
"""
from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3", ".opus", ".aiff", ".aif")
AUDIO_KEYS = ("audio", "audio_filepath", "path", "file", "audio_path", "wav", "filename")
TEXT_KEYS = ("text", "transcript", "sentence", "transcription")
ID_KEYS = ("id", "utt_id", "utterance_id", "key")
# A manifest duration this far from the file's actual length is suspicious (but not fatal).
DURATION_TOLERANCE_S = 0.5
DURATION_TOLERANCE_REL = 0.2


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: Path
    text: str | None
    duration: float | None = None

    def load(self):
        """The waveform: float32 mono 16 kHz."""
        from .audio import load_audio

        return load_audio(self.audio)


def _first_key(row: dict, keys: Iterable[str]) -> str | None:
    for k in keys:
        if k in row and row[k] is not None:
            return k
    return None


def _clean_text(text, where: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{where}: transcript must be a string, got {type(text).__name__}")
    t = text.strip()
    if not t:
        raise ValueError(f"{where}: empty transcript")
    return t


def _row_to_utt(row: dict, base: Path, where: str, extra_dirs: tuple[str, ...] = ()) -> Utterance:
    ak = _first_key(row, AUDIO_KEYS)
    if ak is None:
        raise ValueError(f"{where}: no audio path field (one of {', '.join(AUDIO_KEYS)})")
    rel = Path(str(row[ak])).expanduser()
    candidates = [rel] if rel.is_absolute() else [base / rel] + [base / d / rel for d in extra_dirs]
    audio = next((c for c in candidates if c.is_file()), candidates[0])
    if not audio.is_file():
        raise FileNotFoundError(f"{where}: audio file {audio} not found")
    tk = _first_key(row, TEXT_KEYS)
    text = _clean_text(row[tk], where) if tk is not None else None
    ik = _first_key(row, ID_KEYS)
    uid = str(row[ik]) if ik is not None else rel.with_suffix("").as_posix()
    dur = row.get("duration")
    try:
        duration = float(dur) if dur not in (None, "") else None
    except (TypeError, ValueError):
        raise ValueError(f"{where}: duration {dur!r} is not a number") from None
    return Utterance(uid, audio, text, duration)


def _read_jsonl(path: Path, limit: int | None) -> list[Utterance]:
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object")
            out.append(_row_to_utt(row, path.parent, where))
            if limit is not None and len(out) >= limit:
                break
    return out


def _read_tsv(path: Path, limit: int | None) -> list[Utterance]:
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        fields = reader.fieldnames or []
        if _first_key(dict.fromkeys(fields, ""), AUDIO_KEYS) is None:
            raise ValueError(f"{path}: header row {fields} has no audio column (one of {', '.join(AUDIO_KEYS)})")
        for lineno, row in enumerate(reader, 2):
            if not any((v or "").strip() for v in row.values()):
                continue
            row = {k: v for k, v in row.items() if k is not None}
            out.append(_row_to_utt(row, path.parent, f"{path}:{lineno}", extra_dirs=("clips",)))
            if limit is not None and len(out) >= limit:
                break
    return out


def _read_librispeech(root: Path, limit: int | None) -> list[Utterance]:
    out = []
    for trans in sorted(root.rglob("*.trans.txt")):
        with open(trans, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{trans}:{lineno}"
                uid, _, text = line.strip().partition(" ")
                audio = next((trans.parent / f"{uid}{ext}" for ext in (".flac", ".wav")
                              if (trans.parent / f"{uid}{ext}").is_file()), None)
                if audio is None:
                    raise FileNotFoundError(f"{where}: audio file {trans.parent / (uid + '.flac')} not found")
                out.append(Utterance(uid, audio, _clean_text(text, where), None))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def _read_audio_folder(root: Path, files: list[Path], limit: int | None) -> list[Utterance]:
    out = []
    for audio in files:
        txt = audio.with_suffix(".txt")
        try:
            text = _clean_text(txt.read_text(encoding="utf-8"), str(txt)) if txt.is_file() else None
        except UnicodeDecodeError as e:
            raise ValueError(f"{txt}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        out.append(Utterance(audio.relative_to(root).with_suffix("").as_posix(), audio, text, None))
        if limit is not None and len(out) >= limit:
            break
    return out


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def _check_ids(utts: list[Utterance], source: Path) -> None:
    seen: dict[str, Path] = {}
    for u in utts:
        if u.id in seen:
            raise ValueError(f"{source}: duplicate utterance id {u.id!r} ({seen[u.id]} and {u.audio})")
        seen[u.id] = u.audio


def _check_audio(utts: list[Utterance]) -> None:
    """Header-only check of every file: readable, and duration roughly as the manifest claims."""
    from .audio import audio_info

    for u in utts:
        _, dur = audio_info(u.audio)
        if u.duration is not None and abs(dur - u.duration) > max(DURATION_TOLERANCE_S,
                                                                   DURATION_TOLERANCE_REL * u.duration):
            log.warning("%s: manifest says %.2f s but the file lasts %.2f s (utterance %s)",
                        u.audio, u.duration, dur, u.id)


def detect_layout(path: Path) -> tuple[str, Path]:
    """('jsonl'|'tsv'|'librispeech'|'folder', the file or root to read)."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json", ".ndjson"):
            return "jsonl", path
        if suffix == ".tsv":
            return "tsv", path
        raise ValueError(f"{path}: unknown dataset file type (expected .jsonl manifest or .tsv with a header row)")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: dataset path not found")
    for name, kind in (("manifest.jsonl", "jsonl"), ("manifest.tsv", "tsv")):
        if (path / name).is_file():
            return kind, path / name
    if next(path.rglob("*.trans.txt"), None) is not None:
        return "librispeech", path
    if next((p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS), None) is not None:
        return "folder", path
    raise ValueError(f"{path}: unknown dataset layout (no manifest.jsonl / manifest.tsv, no LibriSpeech "
                     f"*.trans.txt, no audio files {', '.join(AUDIO_EXTENSIONS)})")


def dataset_name(path: str | os.PathLike) -> str:
    """Folder name of a dataset (of the manifest's folder when given a manifest file)."""
    p = Path(path)
    return (p.parent.name if p.is_file() else p.name) or str(p)


def require_transcripts(utts: list[Utterance], source: str | os.PathLike) -> None:
    """Scoring needs a reference for every utterance: raise naming ``source`` and the first one without."""
    missing = [u.id for u in utts if u.text is None]
    if missing:
        raise ValueError(f"{source}: {len(missing)} utterance(s) have no reference transcript (e.g. {missing[0]})")


def load_dataset(path: str | os.PathLike, limit: int | None = None, *, verify_audio: bool = True) -> list[Utterance]:
    """Read a corpus in any supported layout (see the module docstring), in file order, first ``limit`` items.

    ``verify_audio`` reads each file's header: unreadable files fail here (naming the file) instead of
    mid-run, and a manifest duration far from the real one is logged as a warning.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    p = Path(path).expanduser()
    kind, target = detect_layout(p)
    try:
        if kind == "jsonl":
            utts = _read_jsonl(target, limit)
        elif kind == "tsv":
            utts = _read_tsv(target, limit)
        elif kind == "librispeech":
            utts = _read_librispeech(target, limit)
        else:
            utts = _read_audio_folder(target, _audio_files(target), limit)
    except UnicodeDecodeError as e:   # a ValueError whose text names no file
        raise ValueError(f"{target}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise ValueError(f"{target}: malformed TSV ({e})") from None
    if not utts and limit != 0:
        raise ValueError(f"{target}: dataset is empty")
    _check_ids(utts, target)
    if verify_audio:
        _check_audio(utts)
    log.debug("%s: %d utterances (%s layout)", target, len(utts), kind)
    return utts
