"""ggml tensor types: one class per type with its block layout, ggml's own quantizer (bit-exact, with and without
importance weights) and the solver-side lattice. A leaf package: imports nothing from the rest of tarq except
the optional native extension tarq._C.

    from tarq.ggml import get_type, GgmlType, QUANT_TYPES
    t = get_type("q4_k")
    t.name, t.type_id, t.ftype, t.block_size, t.type_size, t.quantized
    t.row_bytes(n), t.fits(n), t.dequantize(raw, n), t.quantize(x, imatrix=None)   # NumPy emulation of ggml
    ggml_quantize(t, x, imatrix=None)    # the same bytes, native when tarq._C is built (product path)

Adding a type: a subclass of :class:`BlockType` (layout, ``_quantize_rows``, ``fit``, ``column_scales``) in a
module imported here, plus its native routines in csrc/lattice/ (docs/kernels.md "Adding a type").
"""
from __future__ import annotations

from . import iq4_nl, kquants, kquants_sym, legacy  # noqa: F401  (registration by subclassing)
from .base import BlockType, FloatType, GgmlType, all_types, as_rows, get_type, type_for_ftype
from .convert import convert_exact
from .fast import as_f16_source, ggml_quantize
from .lattice import FIT_MODES, Lattice, make_lattice
from .plan import PLAN_FITS, TypePlan

F32 = get_type("f32")
F16 = get_type("f16")
TYPES: dict[str, GgmlType] = {t.name: t for t in all_types()}
QUANT_TYPES: dict[str, BlockType] = {n: t for n, t in TYPES.items() if t.quantized}

__all__ = ["BlockType", "F16", "F32", "FIT_MODES", "FloatType", "GgmlType", "Lattice", "QUANT_TYPES", "TYPES",
           "PLAN_FITS", "TypePlan", "as_f16_source", "as_rows", "convert_exact", "get_type", "ggml_quantize", "make_lattice",
           "type_for_ftype"]
