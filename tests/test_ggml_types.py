"""tarq.ggml types: block layout vs a per-element transcription of ggml-common.h, to_float vs ggml's C (both
shipped builds) and gguf-py, registry facts, TypePlan errors and exact container moves."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from tarq.ggml import QUANT_TYPES, TYPES, TypePlan, convert_exact, get_type, type_for_ftype

QTYPES = list(QUANT_TYPES)
LIBS = ["pywhispercpp", "crispasr"]
# ggml.h: enum ggml_type / enum ggml_ftype ("mostly" type) for every type tarq supports
GGML_IDS = {"f32": (0, 0), "f16": (1, 1), "q4_0": (2, 2), "q4_1": (3, 3), "q5_0": (6, 8), "q5_1": (7, 9),
            "q8_0": (8, 7), "q2_k": (10, 10), "q3_k": (11, 11), "q4_k": (12, 12), "q5_k": (13, 13),
            "q6_k": (14, 14), "iq4_nl": (20, 19)}


def _oracle(lib):
    from tarq.export.ggml_oracle import find_ggml_base_libs, load_ggml

    if lib not in find_ggml_base_libs():
        pytest.skip(f"{lib} wheel with libggml-base not installed")
    return load_ggml(lib)


def random_blocks(t, rows: int, cols: int, rng):
    """Random codes over the whole range and random param records with finite fp16 fields."""
    codes = rng.integers(t.code_min, t.code_max + 1, size=(rows, cols))
    nb = cols // t.block_size
    params = np.frombuffer(rng.integers(0, 256, size=rows * nb * t.param_dtype.itemsize, dtype=np.uint8).tobytes(),
                           dtype=t.param_dtype).reshape(rows, nb).copy()
    for f in ("d", "m", "dmin"):
        if f in t.param_dtype.names:
            params[f] = (rng.standard_normal((rows, nb)) * 0.05).astype(np.float16)
    return codes, params


def _half(v) -> bytes:
    return struct.pack("<e", float(v))


def reference_block(name: str, c: list[int], p) -> bytes:
    """One block's bytes written out from ggml-common.h / the quantize_row_* packing loops, element by element."""
    if name in ("q4_0", "q4_1", "iq4_nl"):
        off = 8 if name == "q4_0" else 0
        qs = bytes(((c[j] + off) & 0xF) | (((c[j + 16] + off) & 0xF) << 4) for j in range(16))
        return _half(p["d"]) + (_half(p["m"]) if name == "q4_1" else b"") + qs
    if name in ("q5_0", "q5_1"):
        off = 16 if name == "q5_0" else 0
        u = [v + off for v in c]
        qh = sum(((u[j] >> 4) & 1) << j for j in range(32))
        qs = bytes((u[j] & 0xF) | ((u[j + 16] & 0xF) << 4) for j in range(16))
        return _half(p["d"]) + (_half(p["m"]) if name == "q5_1" else b"") + struct.pack("<I", qh) + qs
    if name == "q8_0":
        return _half(p["d"]) + struct.pack("<32b", *c)
    if name in ("q2_k", "q3_k"):
        L = [v + (4 if name == "q3_k" else 0) for v in c]
        qs = bytearray(64)
        for n in (0, 128):
            for l in range(32):
                qs[n // 4 + l] = ((L[n + l] & 3) | ((L[n + l + 32] & 3) << 2) | ((L[n + l + 64] & 3) << 4)
                                  | ((L[n + l + 96] & 3) << 6))
        if name == "q2_k":
            return bytes(p["scales"]) + bytes(qs) + _half(p["d"]) + _half(p["dmin"])
        hmask = bytearray(32)
        for j in range(256):
            if L[j] > 3:
                hmask[j % 32] |= 1 << (j // 32)
        return bytes(hmask) + bytes(qs) + bytes(p["scales"]) + _half(p["d"])
    if name in ("q4_k", "q5_k"):
        head = _half(p["d"]) + _half(p["dmin"]) + bytes(p["scales"])
        qh = bytearray(32)
        ql = bytearray(128)
        m1, m2 = 1, 2
        for k, n in enumerate(range(0, 256, 64)):
            for j in range(32):
                l1, l2 = c[n + j], c[n + j + 32]
                if l1 > 15:
                    l1 -= 16
                    qh[j] |= m1
                if l2 > 15:
                    l2 -= 16
                    qh[j] |= m2
                ql[32 * k + j] = l1 | (l2 << 4)
            m1, m2 = m1 << 2, m2 << 2
        return head + (bytes(qh) if name == "q5_k" else b"") + bytes(ql)
    if name == "q6_k":
        L = [v + 32 for v in c]
        ql, qh = bytearray(128), bytearray(64)
        for h, j in enumerate((0, 128)):
            for l in range(32):
                q1, q2, q3, q4 = (L[j + l + o] for o in (0, 32, 64, 96))
                ql[64 * h + l] = (q1 & 0xF) | ((q3 & 0xF) << 4)
                ql[64 * h + l + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4)
                qh[32 * h + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
        return bytes(ql) + bytes(qh) + struct.pack("<16b", *p["scales"]) + _half(p["d"])
    raise AssertionError(name)


@pytest.mark.parametrize("name", QTYPES)
def test_encode_matches_per_element_layout_and_round_trips(name):
    t = get_type(name)
    rng = np.random.default_rng(GGML_IDS[name][0])
    codes, params = random_blocks(t, 3, 2 * t.block_size, rng)
    raw = t.encode(codes, params)
    assert raw.shape == (3, 2 * t.type_size) and t.row_bytes(2 * t.block_size) == 2 * t.type_size
    want = b"".join(reference_block(name, [int(v) for v in codes[r, b * t.block_size:(b + 1) * t.block_size]],
                                    params[r, b]) for r in range(3) for b in range(2))
    assert raw.tobytes() == want
    back_codes, back_params = t.decode(raw, 2 * t.block_size)
    assert np.array_equal(back_codes, codes) and back_params.tobytes() == params.tobytes()


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("name", QTYPES)
def test_dequantize_matches_ggml_to_float(lib, name):
    oracle = _oracle(lib)
    t = get_type(name)
    codes, params = random_blocks(t, 8, 4 * t.block_size, np.random.default_rng(7))
    raw = t.encode(codes, params)
    ours = t.dequantize(raw, 4 * t.block_size)
    assert np.isfinite(ours).all()
    assert np.array_equal(ours.view(np.uint32), oracle.to_float(name, raw, 4 * t.block_size).view(np.uint32))


@pytest.mark.parametrize("name", QTYPES)
def test_dequantize_matches_gguf_py(name):
    gguf = pytest.importorskip("gguf")
    t = get_type(name)
    codes, params = random_blocks(t, 4, 2 * t.block_size, np.random.default_rng(8))
    raw = t.encode(codes, params)
    theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[name.upper()])
    assert np.array_equal(t.dequantize(raw, 2 * t.block_size).view(np.uint32),
                          theirs.astype(np.float32).reshape(4, -1).view(np.uint32))


@pytest.mark.parametrize("lib", LIBS)
def test_registry_matches_ggml_type_traits(lib):
    oracle = _oracle(lib)
    for name, (type_id, ftype) in GGML_IDS.items():
        t = TYPES[name]
        assert (t.type_id, t.ftype) == (type_id, ftype) and type_for_ftype(ftype) is t and get_type(type_id) is t
        tr = oracle.traits(t)
        assert (tr.blck_size, tr.type_size, bool(tr.is_quantized)) == (t.block_size, t.type_size, t.quantized), name
        assert tr.type_name.decode().lower() == name
    assert set(TYPES) == set(GGML_IDS)


@pytest.mark.parametrize("ftype", ["f16", "f32"])
def test_float_types_round_trip(ftype):
    t = get_type(ftype)
    x = np.random.default_rng(5).standard_normal((3, 7, 5)).astype(np.float32)
    raw = t.pack(x)
    back = t.unpack(raw, 5).reshape(x.shape)
    assert np.array_equal(back, x.astype(np.float16) if ftype == "f16" else x)
    assert raw.nbytes == x.size * t.type_size


def test_bad_inputs_are_rejected_clearly():
    q4, q4k = get_type("q4_0"), get_type("Q4_K")
    with pytest.raises(ValueError, match=r"codes out of range \[-8, 7\]"):
        q4.encode(np.full((1, 32), 8), np.zeros((1, 1), q4.param_dtype))
    with pytest.raises(ValueError, match="rows of 48 do not tile"):
        q4.encode(np.zeros((1, 48), int), np.zeros((1, 1), q4.param_dtype))
    with pytest.raises(ValueError, match="params must be"):
        q4.encode(np.zeros((2, 64), int), np.zeros((2, 3), q4.param_dtype))
    with pytest.raises(ValueError, match="whole number"):
        q4.dequantize(np.zeros(17, np.uint8), 32)
    with pytest.raises(ValueError, match="unsupported ggml type"):
        get_type("iq2_xxs")
    with pytest.raises(ValueError, match="rows of 384 do not tile"):
        q4k.row_bytes(384)
    assert not q4k.fits(384) and q4k.fits(512) and q4.fits(384)


def test_type_plan_fails_early_naming_tensor_width_and_fitting_types():
    plan = TypePlan("q4_k")
    with pytest.raises(ValueError) as e:
        plan.check([[("model.encoder.layers.0.fc1.weight", (1536, 384))]])
    assert str(e.value) == ("model.encoder.layers.0.fc1.weight: rows of 384 do not tile Q4_K's 256-element "
                            "super-blocks; types that fit: q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl")
    assert plan.type_for("x.fc2.weight", (384, 1536)).name == "q4_k"   # 1536 = 6 * 256 fits


def test_type_plan_overrides_groups_and_fit():
    plan = TypePlan("q4_0", {r"encoder\.": "q8_0", r"fc2": "q6_k"}, group_size=128, fit="weighted")
    assert plan.type_for("model.encoder.layers.0.fc2.weight").name == "q8_0"   # first match wins
    assert plan.type_for("model.decoder.layers.0.fc2.weight").name == "q6_k"
    lat = plan.lattice_for("model.decoder.layers.0.fc1.weight", (256, 512))
    assert (lat.name, lat.group, lat.fit) == ("q4_0", 128, "weighted")
    assert plan.lattice_for("model.decoder.layers.0.fc2.weight", (256, 512)).group == 256
    with pytest.raises(ValueError, match="must share one type"):
        plan.check([[("model.encoder.layers.0.self_attn.q_proj.weight", (64, 512)),
                     ("model.decoder.layers.0.self_attn.k_proj.weight", (64, 512))]])
    with pytest.raises(ValueError, match="do not tile 128-column groups"):
        plan.check([[("model.decoder.layers.0.fc1.weight", (64, 96))]])
    with pytest.raises(ValueError, match="not a quantized type"):
        TypePlan("f16")
    with pytest.raises(ValueError, match="--group-size 64"):
        TypePlan("q4_k", group_size=64)
    # fit "auto": ggml's importance-weighted search, except q4_0 (plain: the codes of earlier releases)
    auto = TypePlan("q4_k", {"fc1": "q4_0"})
    assert auto.lattice_for("x.fc2.weight").fit == "weighted" and auto.lattice_for("x.fc1.weight").fit == "plain"


@pytest.mark.parametrize("target", ["q4_1", "q5_0", "q5_1", "q8_0"])
def test_convert_exact_keeps_weights_bit_identical(target):
    q4 = get_type("q4_0")
    codes, params = random_blocks(q4, 4, 128, np.random.default_rng(9))
    raw = q4.encode(codes, params)
    out = convert_exact("q4_0", raw, 128, target)
    assert np.array_equal(get_type(target).dequantize(out, 128), q4.dequantize(raw, 128))
    with pytest.raises(ValueError, match="cannot be stored exactly"):
        convert_exact("q4_1", raw, 128, "q4_0")           # asymmetric sources never move
    q8 = get_type("q8_0")
    if target == "q8_0":
        return
    with pytest.raises(ValueError, match="do not fit"):
        convert_exact("q8_0", q8.encode(np.full((1, 32), 100), np.ones((1, 1), q8.param_dtype)), 32, target)


def test_ggml_is_a_leaf_package():
    """tarq.ggml imports nothing from methods/export/models/calib/eval (the solver, exporters and readers depend on
    it, never the other way round)."""
    import subprocess
    import sys

    code = ("import sys, tarq.ggml, tarq.ggml.lattice, tarq.ggml.plan; "
            "bad = [m for m in sys.modules if m.split('.')[:2] in (['tarq', s] for s in "
            "('methods', 'export', 'models', 'calib', 'eval', 'kernels', 'cli'))]; print(bad); sys.exit(bool(bad))")
    import tarq
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(tarq.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *sys.path]))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
