"""ggml block packing: vectorised packer vs a slow per-element reference, gguf-py, and ggml's own C."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from tarq.export.ggml_blocks import (GGML_TYPES, BlockData, dequantize_blocks, get_type, group_scales, pack_blocks,
                                     unpack_blocks)

QTYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]


def reference_pack(qtype: str, codes: np.ndarray, d: np.ndarray, m: np.ndarray | None) -> bytes:
    """Straight from ggml-common.h, one block at a time with struct.pack (per-block d and m)."""
    out = bytearray()
    rows, cols = codes.shape
    for r in range(rows):
        for b in range(cols // 32):
            q = [int(v) for v in codes[r, 32 * b:32 * b + 32]]
            dh = struct.pack("<e", float(d[r, b]))
            mh = struct.pack("<e", float(m[r, b])) if m is not None else b""
            if qtype == "q8_0":
                out += dh + struct.pack("<32b", *q)
                continue
            off = {"q4_0": 8, "q4_1": 0, "q5_0": 16, "q5_1": 0}[qtype]
            u = [v + off for v in q]
            qs = bytes((u[j] & 0xF) | ((u[j + 16] & 0xF) << 4) for j in range(16))
            if qtype in ("q4_0", "q4_1"):
                out += dh + mh + qs
            else:
                qh = sum(((u[j] >> 4) & 1) << j for j in range(32))
                out += dh + mh + struct.pack("<I", qh) + qs
    return bytes(out)


def random_block_data(qtype: str, rows: int, cols: int, group: int, rng) -> tuple:
    t = get_type(qtype)
    codes = rng.integers(t.qmin, t.qmax + 1, size=(rows, cols))
    scales = (rng.standard_normal((rows, cols // group)) * 0.05).astype(np.float16)
    mins = (rng.standard_normal((rows, cols // group)) * 0.1).astype(np.float16) if t.has_min else None
    return codes, scales, mins


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("group", [32, 64, 128])
def test_pack_matches_reference_and_round_trips(qtype, group):
    rng = np.random.default_rng(hash((qtype, group)) % 2**32)
    codes, scales, mins = random_block_data(qtype, 6, 256, group, rng)
    raw = pack_blocks(qtype, codes, scales, mins)
    t = get_type(qtype)
    assert raw.shape == (6, 256 // 32 * t.type_size)
    rep = group // 32
    ref = reference_pack(qtype, codes, np.repeat(scales, rep, 1), None if mins is None else np.repeat(mins, rep, 1))
    assert raw.tobytes() == ref
    bd = unpack_blocks(qtype, raw, 256)
    assert np.array_equal(bd.codes, codes)
    assert np.array_equal(group_scales(bd.scales, group).view(np.uint16), scales.view(np.uint16))
    if mins is not None:
        assert np.array_equal(group_scales(bd.mins, group).view(np.uint16), mins.view(np.uint16))


def test_q4_0_nibble_order_is_j_and_j_plus_16():
    codes = np.full((1, 32), -8)
    codes[0, 0] = 7      # element 0 -> low nibble of byte 0 = 15
    codes[0, 16] = -7    # element 16 -> high nibble of byte 0 = 1
    codes[0, 1] = 0      # element 1 -> low nibble of byte 1 = 8
    raw = pack_blocks("q4_0", codes, np.ones((1, 1), np.float16))
    assert raw[0, :2].tobytes() == struct.pack("<e", 1.0)
    assert raw[0, 2] == 0x1F and raw[0, 3] == 0x08


@pytest.mark.parametrize("qtype", QTYPES)
def test_dequantize_matches_gguf_py(qtype):
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(3)
    codes, scales, mins = random_block_data(qtype, 4, 128, 64, rng)
    raw = pack_blocks(qtype, codes, scales, mins)
    ours = dequantize_blocks(qtype, raw, 128)
    theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype.upper()])
    assert np.array_equal(ours.view(np.uint32), theirs.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("lib", ["pywhispercpp", "crispasr"])
@pytest.mark.parametrize("qtype", QTYPES)
def test_dequantize_matches_ggml_c(lib, qtype):
    from tarq.export.ggml_oracle import find_ggml_base_libs, load_ggml

    if lib not in find_ggml_base_libs():
        pytest.skip(f"{lib} wheel with libggml-base not installed")
    rng = np.random.default_rng(4)
    codes, scales, mins = random_block_data(qtype, 8, 384, 128, rng)
    raw = pack_blocks(qtype, codes, scales, mins)
    c = load_ggml(lib).to_float(qtype, raw, 384)
    assert np.array_equal(dequantize_blocks(qtype, raw, 384).view(np.uint32), c.view(np.uint32))
    # the symmetric types dequantize to exactly d * q: the solver's value
    if mins is None:
        assert np.array_equal(c, codes * np.repeat(scales.astype(np.float32), 128, 1))


@pytest.mark.parametrize("ftype", ["f16", "f32"])
def test_float_types_round_trip(ftype):
    x = np.random.default_rng(5).standard_normal((3, 7, 5)).astype(np.float32)
    raw = pack_blocks(ftype, x)
    back = unpack_blocks(ftype, raw, 5).reshape(x.shape)
    want = x.astype(np.float16) if ftype == "f16" else x
    assert np.array_equal(back, want)
    assert raw.nbytes == x.size * GGML_TYPES[ftype].type_size


def test_bad_inputs_are_rejected_clearly():
    with pytest.raises(ValueError, match=r"codes out of range \[-8, 7\]"):
        pack_blocks("q4_0", np.full((1, 32), 8), np.ones((1, 1), np.float16))
    with pytest.raises(ValueError, match="not a multiple of 32"):
        pack_blocks("q8_0", np.zeros((1, 48)), np.ones((1, 1), np.float16))
    with pytest.raises(ValueError, match="does not tile"):
        pack_blocks("q4_0", np.zeros((2, 64)), np.ones((2, 3), np.float16))
    with pytest.raises(ValueError, match="needs mins"):
        pack_blocks("q4_1", np.zeros((1, 32)), np.ones((1, 1), np.float16))
    with pytest.raises(ValueError, match="whole number"):
        unpack_blocks("q4_0", np.zeros(17, np.uint8), 32)
    with pytest.raises(ValueError, match="unsupported ggml type"):
        get_type("q3_k")
    scales = np.array([[1.0, 2.0]], np.float16)
    with pytest.raises(ValueError, match="different values"):
        group_scales(scales, 64)


def test_block_data_types():
    bd = unpack_blocks("q8_0", pack_blocks("q8_0", np.full((2, 32), -128), np.ones((2, 1), np.float16)), 32)
    assert isinstance(bd, BlockData) and bd.codes.dtype == np.int8 and bd.scales.dtype == np.float16
    assert (bd.codes == -128).all() and bd.mins is None
