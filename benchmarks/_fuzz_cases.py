"""Fuzz cases for fuzz_inputs.py: mutated whisper.cpp ``.bin`` / GGUF files and bad data sets, all seeded.

Model mutations aim at every part of a file a loader trusts: header integers (set to boundary values), mel filter
and vocabulary sizes, tensor records (n_dims, name length, type, dimensions, name bytes), record order and count,
truncation anywhere, bit flips in headers and in tensor data, NaN/Inf written into data, garbage appended. Data
set cases are broken manifests (JSON, TSV, missing fields, wrong types, duplicate ids, non-UTF-8), broken or odd
audio (empty, truncated, random bytes, NaN samples, 10 ms, 8 kHz stereo, a directory named .flac) and layouts
(empty folder, LibriSpeech tree without audio).
"""
from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INTERESTING = [0, -1, 1, 2, 3, 4, 5, 7, 8, 31, 32, 63, 64, 79, 80, 81, 127, 128, 200, 201, 202, 255, 256, 383, 384,
               447, 448, 449, 1499, 1500, 1501, 2002, 2003, 2005, 2007, 2010, 2015, 3000, 51863, 51864, 51865,
               51866, 51867, 65535, 65536, 1 << 24, (1 << 31) - 1, -(1 << 31), -2, 1000000]


@dataclass
class BinLayout:
    """Offsets of the parts of a whisper.cpp .bin (from tarq's reader on the clean file)."""
    mel_end: int
    vocab_end: int
    records: list[tuple[int, int, int]]   # (record start, data start, data end)


def bin_layout(raw: bytes) -> BinLayout:
    n_mel, n_fft = struct.unpack_from("<2i", raw, 48)
    pos = 56 + 4 * n_mel * n_fft
    mel_end = pos
    (n_tok,) = struct.unpack_from("<i", raw, pos)
    pos += 4
    for _ in range(n_tok):
        (ln,) = struct.unpack_from("<I", raw, pos)
        pos += 4 + ln
    vocab_end, records = pos, []
    type_sizes = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34)}
    while pos < len(raw):
        n_dims, name_len, ttype = struct.unpack_from("<3i", raw, pos)
        ne = struct.unpack_from(f"<{n_dims}i", raw, pos + 12)
        data = pos + 12 + 4 * n_dims + name_len
        blk, size = type_sizes[ttype]
        n = int(np.prod(ne))
        records.append((pos, data, data + n // blk * size))
        pos = data + n // blk * size
    return BinLayout(mel_end, vocab_end, records)


def mutate_bin(raw: bytes, lay: BinLayout, rng: random.Random) -> tuple[bytes, str]:
    b = bytearray(raw)
    kind = rng.choices(["hparam", "mel_dims", "vocab", "record_field", "name", "truncate", "flip_header",
                        "flip_data", "nan_data", "swap", "drop", "duplicate", "append", "zero_range"],
                       [14, 4, 6, 16, 5, 10, 8, 12, 5, 3, 4, 3, 4, 6])[0]
    if kind == "hparam":
        i = rng.randrange(11)
        v = rng.choice(INTERESTING)
        struct.pack_into("<i", b, 4 + 4 * i, v)
        return bytes(b), f"hparam[{i}]={v}"
    if kind == "mel_dims":
        i = rng.randrange(2)
        v = rng.choice(INTERESTING)
        struct.pack_into("<i", b, 48 + 4 * i, v)
        return bytes(b), f"mel dim[{i}]={v}"
    if kind == "vocab":
        if rng.random() < 0.4:
            v = rng.choice(INTERESTING)
            struct.pack_into("<i", b, lay.mel_end, v)
            return bytes(b), f"vocab count={v}"
        off = rng.randrange(lay.mel_end + 4, lay.vocab_end)
        b[off] ^= 1 << rng.randrange(8)
        return bytes(b), f"vocab bit flip @{off}"
    if kind == "record_field":
        start, _, _ = rng.choice(lay.records)
        n_dims = struct.unpack_from("<i", b, start)[0]
        field = rng.randrange(3 + n_dims)
        v = rng.choice(INTERESTING)
        struct.pack_into("<i", b, start + 4 * field, v)
        what = ["n_dims", "name_len", "type"][field] if field < 3 else f"ne[{field - 3}]"
        return bytes(b), f"record@{start} {what}={v}"
    if kind == "name":
        start, data, _ = rng.choice(lay.records)
        n_dims = struct.unpack_from("<i", b, start)[0]
        off = rng.randrange(start + 12 + 4 * n_dims, data)
        b[off] = rng.randrange(256)
        return bytes(b), f"name byte @{off}"
    if kind == "truncate":
        cut = rng.randrange(0, len(b)) if rng.random() < 0.5 else rng.randrange(0, lay.records[3][0])
        return bytes(b[:cut]), f"truncated at {cut}"
    if kind == "flip_header":
        off = rng.randrange(0, lay.mel_end if rng.random() < 0.5 else lay.records[0][0])
        b[off] ^= 1 << rng.randrange(8)
        return bytes(b), f"header bit flip @{off}"
    if kind in ("flip_data", "nan_data"):
        _, data, end = rng.choice(lay.records)
        off = rng.randrange(data, end)
        if kind == "flip_data":
            b[off] ^= 1 << rng.randrange(8)
            return bytes(b), f"data bit flip @{off}"
        span = min(4, end - off)
        b[off:off + span] = (b"\xff\x7f\xff\x7f" if rng.random() < 0.5 else b"\x00\x7c\x00\x7c")[:span]
        return bytes(b), f"NaN/Inf bytes @{off}"
    if kind in ("swap", "drop", "duplicate"):
        i = rng.randrange(len(lay.records))
        s, _, e = lay.records[i]
        rec = bytes(b[s:e])
        if kind == "drop":
            return bytes(b[:s] + b[e:]), f"record {i} dropped"
        if kind == "duplicate":
            return bytes(b[:e] + rec + b[e:]), f"record {i} duplicated"
        j = rng.randrange(len(lay.records))
        s2, _, e2 = lay.records[j]
        if j == i:
            return bytes(b), "identity swap"
        (s, e, rec), (s2, e2) = ((s, e, rec), (s2, e2)) if s < s2 else ((s2, e2, bytes(b[s2:e2])), (s, e))
        rec2 = bytes(b[s2:e2])
        return bytes(b[:s] + rec2 + b[e:s2] + rec + b[e2:]), f"records {i},{j} swapped"
    if kind == "append":
        return bytes(b) + bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 12, 100]))), "garbage appended"
    off = rng.randrange(len(b))
    n = rng.choice([4, 64, 4096, 65536])
    b[off:off + n] = bytes(min(n, len(b) - off))
    return bytes(b), f"zeroed {n} bytes @{off}"


def mutate_gguf(raw: bytes, meta_end: int, rng: random.Random) -> tuple[bytes, str]:
    """Mutations of a GGUF: header counts, anything in the KV/tensor-info region (which ends at ``meta_end``, the
    data offset), truncation, data bit flips."""
    b = bytearray(raw)
    kind = rng.choices(["header", "meta_int", "meta_flip", "truncate", "data_flip", "append"], [4, 8, 6, 4, 3, 1])[0]
    if kind == "header":
        off = rng.choice([4, 8, 16])
        fmt = "<I" if off == 4 else "<Q"
        v = rng.choice([0, 1, 2, 3, 4, 7, 1 << 20, (1 << 32) - 1] if off == 4 else [0, 1, 2, 5, 1000, 1 << 40, (1 << 64) - 1])
        struct.pack_into(fmt, b, off, v)
        return bytes(b), f"header @{off}={v}"
    if kind == "meta_int":
        off = rng.randrange(24, max(25, meta_end - 8))
        v = rng.choice([0, 1, 3, 13, 32, 255, 1 << 16, 1 << 31, (1 << 32) - 1])
        struct.pack_into("<I", b, off, v)
        return bytes(b), f"meta u32 @{off}={v}"
    if kind == "meta_flip":
        off = rng.randrange(24, meta_end)
        b[off] ^= 1 << rng.randrange(8)
        return bytes(b), f"meta bit flip @{off}"
    if kind == "truncate":
        cut = rng.randrange(0, len(b))
        return bytes(b[:cut]), f"truncated at {cut}"
    if kind == "data_flip":
        off = rng.randrange(meta_end, len(b))
        b[off] ^= 1 << rng.randrange(8)
        return bytes(b), f"data bit flip @{off}"
    return bytes(b) + bytes(rng.randrange(256) for _ in range(17)), "garbage appended"


def gguf_data_offset(path: Path) -> int:
    import gguf

    return int(gguf.GGUFReader(str(path)).data_offset)


# ----------------------------------------------------------------------------------------------- data sets

def _wav(path: Path, audio: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> None:
    import soundfile as sf

    sf.write(str(path), audio, sr, subtype=subtype)


def make_bad_dataset(root: Path, rng: random.Random, good_audio: Path, good_text: str) -> tuple[Path, str]:
    """A data set under ``root`` broken one way (or valid but unusual); returns (path to give --data, description)."""
    import soundfile as sf

    root.mkdir(parents=True)
    audio, _ = sf.read(str(good_audio), dtype="float32")
    kind = rng.choice(["bad_json", "not_object", "no_audio_key", "missing_audio", "empty_audio_file", "random_bytes",
                       "truncated_flac", "nan_samples", "tiny_audio", "stereo_8k", "audio_is_dir", "text_number",
                       "text_empty", "text_null", "duration_bad", "duplicate_ids", "non_utf8", "empty_manifest",
                       "tsv_no_audio_col", "tsv_ragged", "empty_folder", "librispeech_missing", "silence",
                       "zero_samples", "huge_duration", "wrong_extension", "binary_manifest", "absolute_missing"])
    man = root / "manifest.jsonl"

    def write_rows(rows):
        man.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    a = root / "a.flac"
    if kind in ("bad_json", "not_object", "no_audio_key", "text_number", "text_empty", "text_null", "duration_bad",
                "duplicate_ids", "non_utf8", "huge_duration", "silence", "tiny_audio", "stereo_8k", "nan_samples",
                "zero_samples", "random_bytes", "truncated_flac", "empty_audio_file", "wrong_extension"):
        sf.write(str(a), audio, 16000)
    row = {"id": "u1", "audio": "a.flac", "text": good_text}
    if kind == "bad_json":
        man.write_text(json.dumps(row)[: rng.randrange(1, 30)] + "\n")
    elif kind == "not_object":
        man.write_text(rng.choice(["[1, 2]\n", "\"a.flac\"\n", "42\n", "null\n"]))
    elif kind == "no_audio_key":
        write_rows([{"id": "u1", "text": good_text, "wav_file": "a.flac"}])
    elif kind == "missing_audio":
        write_rows([{**row, "audio": f"nowhere-{rng.randrange(99)}.flac"}])
    elif kind == "absolute_missing":
        write_rows([{**row, "audio": f"/nonexistent/dir/x{rng.randrange(99)}.wav"}])
    elif kind == "empty_audio_file":
        a.write_bytes(b"")
        write_rows([row])
    elif kind == "random_bytes":
        a.write_bytes(bytes(rng.randrange(256) for _ in range(rng.choice([3, 100, 5000]))))
        write_rows([row])
    elif kind == "truncated_flac":
        data = a.read_bytes()
        a.write_bytes(data[: rng.randrange(4, max(5, len(data) // 2))])
        write_rows([row])
    elif kind in ("nan_samples", "tiny_audio", "stereo_8k", "silence", "zero_samples"):
        w = root / "a.wav"
        if kind == "nan_samples":
            x = audio.copy()
            x[rng.randrange(len(x))] = rng.choice([np.nan, np.inf, -np.inf])
            _wav(w, x, subtype="FLOAT")
        elif kind == "tiny_audio":
            _wav(w, audio[: rng.choice([1, 16, 160, 800])])
        elif kind == "stereo_8k":
            x = audio[::2]
            _wav(w, np.stack([x, x], 1), sr=8000)
        elif kind == "silence":
            _wav(w, np.zeros(16000 * rng.choice([1, 3]), np.float32))
        else:
            w.write_bytes(_header_only_wav())
        write_rows([{**row, "audio": "a.wav"}])
    elif kind == "audio_is_dir":
        (root / "d.flac").mkdir()
        write_rows([{**row, "audio": "d.flac"}])
    elif kind == "text_number":
        write_rows([{**row, "text": rng.choice([42, 1.5, [1], {"a": 1}, True])}])
    elif kind == "text_empty":
        write_rows([{**row, "text": rng.choice(["", "   ", "\n"])}])
    elif kind == "text_null":
        write_rows([{**row, "text": None}])
    elif kind == "duration_bad":
        write_rows([{**row, "duration": rng.choice(["long", [3], {"s": 1}, "nan", -5])}])
    elif kind == "huge_duration":
        write_rows([{**row, "duration": 1e9}])
    elif kind == "duplicate_ids":
        write_rows([row, row])
    elif kind == "non_utf8":
        man.write_bytes(json.dumps(row).encode()[:-2] + b"\xff\xfe\"}\n")
    elif kind == "binary_manifest":
        man.write_bytes(bytes(rng.randrange(256) for _ in range(200)))
    elif kind == "empty_manifest":
        man.write_text(rng.choice(["", "\n\n", "   \n"]))
    elif kind == "wrong_extension":
        (root / "a.flac").rename(root / "a.txt")
        write_rows([{**row, "audio": "a.txt"}])
    elif kind == "tsv_no_audio_col":
        (root / "manifest.tsv").write_text("id\ttext\nu1\thello\n")
    elif kind == "tsv_ragged":
        sf.write(str(a), audio, 16000)
        (root / "manifest.tsv").write_text("path\tsentence\na.flac\n\tonly text\na.flac\tx\ty\tz\n")
    elif kind == "empty_folder":
        (root / "notes.txt").write_text("nothing here")
    elif kind == "librispeech_missing":
        d = root / "19" / "198"
        d.mkdir(parents=True)
        (d / "19-198.trans.txt").write_text("19-198-0001 HELLO WORLD\n")
    return root, kind


def _header_only_wav() -> bytes:
    """A RIFF/WAVE header with a data chunk of 0 bytes (16 kHz mono PCM16)."""
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, 16000, 32000, 2, 16)
    data = struct.pack("<4sI", b"data", 0)
    return struct.pack("<4sI4s", b"RIFF", 4 + len(fmt) + len(data), b"WAVE") + fmt + data
