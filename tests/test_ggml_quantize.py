"""ggml's quantizer in tarq (NumPy emulation and the native routine) vs ggml itself: ggml_quantize_chunk of both
shipped libggml-base builds through ctypes, with and without importance weights, on adversarial data; and the
solver's group fit, native vs NumPy, for every type, fit mode and group width."""
from __future__ import annotations

import numpy as np
import pytest

from tarq.ggml import QUANT_TYPES, as_f16_source, get_type, ggml_quantize

try:
    from tarq import _C
except ImportError:
    _C = None
needs_native = pytest.mark.skipif(_C is None, reason="tarq._C is not built")
QTYPES = list(QUANT_TYPES)
F = np.float32


def _oracle(lib="pywhispercpp"):
    from tarq.export.ggml_oracle import find_ggml_base_libs, load_ggml

    if lib not in find_ggml_base_libs():
        pytest.skip(f"{lib} wheel with libggml-base not installed")
    return load_ggml(lib)


def adversarial(n: int = 512, rows: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.01, 1, (rows, n // 32, 1))
    zeros = np.zeros((rows, n), F)
    zeros[1, 3], zeros[2, ::7], zeros[3, 100], zeros[4, :] = 1e-30, -0.0, 1e-20, -0.0
    zeros[5, :16] = 1.0
    signs = np.full((rows, n), 0.5, F)
    signs[::2] *= -1
    return {
        "normal": rng.standard_normal((rows, n)).astype(F),
        "f16": as_f16_source(rng.standard_normal((rows, n))),
        "on_grid_halves": (d * rng.integers(-16, 16, (rows, n // 32, 32)) / 2).reshape(rows, n).astype(F),
        "quarter_ties": (rng.integers(-40, 40, (rows, n)) * 0.25).astype(F),
        "zeros_signed_zeros_denormals": zeros,
        "tiny": (rng.standard_normal((rows, n)) * 1e-6).astype(F),
        "huge": (rng.standard_normal((rows, n)) * 6e4).astype(F),
        "heavy_tailed": (rng.standard_t(2, (rows, n)) * 0.02).astype(F),
        "one_sign": np.abs(rng.standard_normal((rows, n))).astype(F) * np.where(np.arange(rows) % 2, 1, -1)[:, None],
        "constant": signs,
        "max_ties": np.tile(np.array([1.0, -1.0] * 16, F), (rows, n // 32)),
        "small_integers": rng.integers(-3, 4, (rows, n)).astype(F),
        "sparse": (rng.standard_normal((rows, n)) * (rng.random((rows, n)) < 0.05)).astype(F),
    }


def importances(n: int = 512, seed: int = 1) -> dict[str, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    return {"none": None,
            "uniform_with_zeros": np.where(rng.random(n) < 0.2, 0, rng.uniform(0, 5, n)).astype(F),
            "wide_range": (10.0 ** rng.uniform(-9, 6, n)).astype(F)}


@pytest.mark.parametrize("name", QTYPES)
def test_numpy_quantizer_is_ggml_bit_for_bit(name):
    oracle = _oracle()
    t = get_type(name)
    for iname, imx in importances().items():
        for cname, x in adversarial().items():
            with np.errstate(all="ignore"):
                ours = t.quantize(x, imx)
            assert np.array_equal(ours, oracle.quantize(name, x, imx)), f"{name} {cname} importance={iname}"


@needs_native
@pytest.mark.parametrize("lib", ["pywhispercpp", "crispasr"])
@pytest.mark.parametrize("name", QTYPES)
def test_native_quantizer_is_ggml_bit_for_bit(lib, name):
    oracle = _oracle(lib)
    t = get_type(name)
    for iname, imx in importances(seed=2).items():
        for cname, x in adversarial(seed=3).items():
            ours = _C.ggml_quantize(t.type_id, x, imx)
            assert np.array_equal(ours, oracle.quantize(name, x, imx)), f"{name} {cname} importance={iname}"


def test_product_path_uses_native_or_numpy_and_both_agree(monkeypatch):
    oracle = _oracle()
    x = adversarial(n=256, rows=6, seed=4)["normal"]
    imx = importances(n=256)["uniform_with_zeros"]
    for name in ("q4_0", "q3_k", "iq4_nl"):
        want = oracle.quantize(name, x, imx)
        assert np.array_equal(ggml_quantize(name, x, imx), want)
        monkeypatch.setenv("TARQ_KERNELS", "reference")
        assert np.array_equal(ggml_quantize(name, x, imx), want)
        monkeypatch.delenv("TARQ_KERNELS")


def test_quantizer_input_errors():
    with pytest.raises(ValueError, match="rows of 384 do not tile"):
        ggml_quantize("q6_k", np.zeros((2, 384), F))
    with pytest.raises(ValueError, match="importance vector has 64 entries for rows of 32"):
        ggml_quantize("q4_0", np.zeros((2, 32), F), np.ones(64, F))
    with pytest.raises(ValueError, match="finite and >= 0"):
        ggml_quantize("q4_k", np.zeros((1, 256), F), -np.ones(256, F))


@needs_native
@pytest.mark.parametrize("name", QTYPES)
def test_native_group_fit_equals_numpy_fit(name):
    """The solver's fit (group parameters from float64 weights) is the same bytes in C++ and NumPy."""
    t = get_type(name)
    rng = np.random.default_rng(t.type_id)
    for G in t.solver_groups:
        x = rng.standard_normal((48, G)) * np.exp(rng.normal(0, 1, (48, 1))) * 0.05
        x[0] = 0.0
        x[1, : G // 2] = 0.0
        x[2] = np.abs(x[2])        # a one-signed group whose minimum is a signed zero: +0 and -0, first one wins
        x[2, 3], x[2, 5] = -0.0, 0.0
        imp = np.where(rng.random(G) < 0.1, 0, rng.uniform(0, 3, G)).astype(F)
        sigma2 = (x.astype(F) ** 2).mean(axis=1).astype(F)
        for mode, m in (("plain", 0), ("weighted", 1)):
            ours = np.ascontiguousarray(t.fit(x, imp, sigma2, mode)).view(np.uint8).reshape(48, -1)
            native = _C.lattice_fit(t.type_id, G, m, x, imp if mode == "weighted" else None, sigma2)
            assert np.array_equal(native.reshape(48, -1), ours), f"{name} G={G} {mode}"


@pytest.mark.parametrize("name", ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"])
def test_legacy_types_match_gguf_py(name):
    gguf = pytest.importorskip("gguf")
    x = np.random.default_rng(12).standard_normal((16, 128)).astype(F)
    assert np.array_equal(get_type(name).quantize(x), gguf.quants.quantize(x, gguf.GGMLQuantizationType[name.upper()]))
