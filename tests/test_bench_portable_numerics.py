"""benchmarks/bench_portable_numerics.py: block-by-block comparison of two quantized-model directories against
hand-placed differences."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_portable_numerics  # noqa: E402


def _write(d: Path, flip: list[tuple[str, int, int]]) -> Path:
    from tarq.qmodel import QuantizedTensor, save_quantized_model

    rng = np.random.default_rng(0)
    tensors = {}
    for name, rows in (("a.weight", 4), ("b.weight", 2)):
        data = rng.integers(0, 256, size=(rows, 2 * 18), dtype=np.uint8)   # q4_0: 2 blocks of 18 bytes per row
        for n, row, byte in flip:
            if n == name:
                data[row, byte] ^= 1
        tensors[name] = QuantizedTensor("q4_0", torch.from_numpy(data), (rows, 64))
    return save_quantized_model(d, family="whisper", config={"model_type": "whisper"}, quantized=tensors, floats={})


def test_block_differences_counts_hand_placed_flips(tmp_path):
    a = _write(tmp_path / "a", [])
    # two flips in one block (row 0, first block), one in another block of a, one in b's last block
    b = _write(tmp_path / "b", [("a.weight", 0, 1), ("a.weight", 0, 17), ("a.weight", 3, 20), ("b.weight", 1, 35)])
    r = bench_portable_numerics.block_differences(a, b)
    assert r == {"tensors": 2, "tensors_differ": 2, "blocks": 12, "blocks_differ": 3}
    assert bench_portable_numerics.block_differences(a, a)["blocks_differ"] == 0
