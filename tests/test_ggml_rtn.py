"""The NumPy clone of ggml's reference quantizers vs a scalar reference, gguf-py and ggml's C via ctypes."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tarq.export.ggml_blocks import get_type
from tarq.export.ggml_rtn import as_f16_source, ggml_reference_quantize, ggml_reference_quantize_bytes

QTYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]
F = np.float32


def scalar_reference(qtype: str, block: np.ndarray):
    """quantize_row_*_ref for one block, written the way the C reads (float32 scalars, loops)."""
    x = [F(v) for v in block]
    if qtype in ("q4_0", "q5_0"):
        amax, mx = F(0), F(0)
        for v in x:
            if amax < abs(v):
                amax, mx = abs(v), v
        half = 8 if qtype == "q4_0" else 16
        d = F(mx / F(-half))
        idv = F(F(1) / d) if d != 0 else F(0)
        q = [min(2 * half - 1, math.trunc(float(F(F(v * idv) + F(half + 0.5))))) - half for v in x]
        return q, d, None
    if qtype in ("q4_1", "q5_1"):
        lo, hi = min(x), max(x)
        levels = 15 if qtype == "q4_1" else 31
        d = F(F(hi - lo) / F(levels))
        idv = F(F(1) / d) if d != 0 else F(0)
        q = [min(levels, math.trunc(float(F(F(F(v - lo) * idv) + F(0.5))))) for v in x]
        return q, d, lo
    amax = max(abs(v) for v in x)
    d = F(amax / F(127))
    idv = F(F(1) / d) if d != 0 else F(0)
    q = []
    for v in x:
        y = float(F(v * idv))
        q.append(int(math.copysign(math.floor(abs(y) + 0.5), y)))  # roundf
    return q, d, None


def adversarial(rng) -> dict[str, np.ndarray]:
    d = rng.uniform(0.01, 1, (32, 8, 1))
    zeros = np.zeros((2, 64), F)
    zeros[1, 3] = 1e-30
    return {
        "normal": rng.standard_normal((32, 256)).astype(F),
        "f16": as_f16_source(rng.standard_normal((32, 256))),
        "on_grid_halves": (d * rng.integers(-16, 16, (32, 8, 32)) / 2).reshape(32, 256).astype(F),
        "quarter_ties": (rng.integers(-40, 40, (32, 256)) * 0.25).astype(F),
        "zeros_and_denormal": zeros,
        "tiny": (rng.standard_normal((32, 256)) * 1e-6).astype(F),
        "huge": (rng.standard_normal((32, 256)) * 6e4).astype(F),
        "max_ties": np.tile(np.array([1.0, -1.0] * 16, F), (4, 2)),
    }


@pytest.mark.parametrize("qtype", QTYPES)
def test_vectorised_matches_scalar_reference(qtype):
    rng = np.random.default_rng(10)
    for name, x in adversarial(rng).items():
        x = x[:4, :64]
        bd = ggml_reference_quantize(qtype, x)
        blocks = x.reshape(-1, 32)
        for i, blk in enumerate(blocks):
            q, d, m = scalar_reference(qtype, blk)
            r, b = divmod(i, x.shape[1] // 32)
            assert bd.codes[r, 32 * b:32 * b + 32].tolist() == q, (name, i)
            assert bd.scales[r, b].tobytes() == np.float16(d).tobytes(), (name, i)
            if m is not None:
                with np.errstate(over="ignore"):
                    assert bd.mins[r, b].tobytes() == np.float16(m).tobytes(), (name, i)


@pytest.mark.parametrize("lib", ["pywhispercpp", "crispasr"])
@pytest.mark.parametrize("qtype", QTYPES)
def test_matches_ggml_quantize_chunk(lib, qtype):
    from tarq.export.ggml_oracle import find_ggml_base_libs, load_ggml

    if lib not in find_ggml_base_libs():
        pytest.skip(f"{lib} wheel with libggml-base not installed")
    oracle = load_ggml(lib)
    rng = np.random.default_rng(11)
    for name, x in adversarial(rng).items():
        with np.errstate(over="ignore"):
            ours = ggml_reference_quantize_bytes(qtype, x)
        assert np.array_equal(ours, oracle.quantize(qtype, x)), f"{qtype} {name} differs from ggml"


@pytest.mark.parametrize("qtype", QTYPES)
def test_matches_gguf_py(qtype):
    gguf = pytest.importorskip("gguf")
    x = np.random.default_rng(12).standard_normal((16, 128)).astype(F)
    theirs = gguf.quants.quantize(x, gguf.GGMLQuantizationType[qtype.upper()])
    assert np.array_equal(ggml_reference_quantize_bytes(qtype, x), theirs)


def test_q4_0_uses_unrounded_d_for_codes_and_fp16_d_for_storage():
    # a block whose max/-8 is not an fp16 value: codes come from the f32 d, the stored d is fp16(d)
    x = np.linspace(-1.2345678, 1.0, 32, dtype=F)[None, :]
    bd = ggml_reference_quantize("q4_0", x)
    d32 = F(x[0, 0] / F(-8))
    assert bd.scales[0, 0] == np.float16(d32) and F(np.float16(d32)) != d32
    assert bd.codes[0, 0] == -8  # the signed max lands exactly on -8
    assert np.array_equal(bd.codes[0], np.minimum(15, np.trunc(x[0] * (F(1) / d32) + F(8.5))).astype(int) - 8)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="multiple of 32"):
        ggml_reference_quantize("q4_0", np.zeros((2, 40), F))
    with pytest.raises(ValueError, match="not a block-quantized type"):
        ggml_reference_quantize("f16", np.zeros((2, 32), F))
    assert get_type("q8_0").row_bytes(64) == 68
