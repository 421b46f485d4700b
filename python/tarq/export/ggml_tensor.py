"""``GgmlTensor``: one tensor as ggml stores it (type, NumPy-order shape, raw bytes), with decoders."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ggml import GgmlType


@dataclass
class GgmlTensor:
    name: str
    ggml_type: GgmlType
    shape: tuple[int, ...]  # NumPy order; the file stores it reversed (ne[0] = last dim)
    data: np.ndarray        # uint8, exactly ggml_nbytes

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.data = np.ascontiguousarray(self.data, dtype=np.uint8).reshape(-1)
        want = self.ggml_type.nbytes(self.shape)
        if self.data.size != want:
            raise ValueError(f"tensor {self.name!r}: {self.data.size} bytes, but {self.ggml_type.name} "
                             f"{self.shape} needs {want}")

    @classmethod
    def from_float(cls, name: str, values: np.ndarray, ggml_type: GgmlType) -> "GgmlTensor":
        values = np.asarray(values)
        return cls(name, ggml_type, values.shape, ggml_type.pack(values))

    @property
    def n_per_row(self) -> int:
        return self.shape[-1] if self.shape else 1

    def rows(self) -> np.ndarray:
        """The bytes as uint8 [rows, row_bytes]."""
        return self.data.reshape(-1, self.ggml_type.row_bytes(self.n_per_row))

    def decode(self) -> tuple[np.ndarray, np.ndarray]:
        """(codes [rows, n], params [rows, n / block]) of a block-quantized tensor."""
        if not self.ggml_type.quantized:
            raise TypeError(f"tensor {self.name!r} is {self.ggml_type.name}, not block-quantized")
        return self.ggml_type.decode(self.data, self.n_per_row)

    def to_float(self) -> np.ndarray:
        """float32 values in NumPy shape, as ggml's to_float gives them."""
        return self.ggml_type.dequantize(self.data, self.n_per_row).reshape(self.shape)
