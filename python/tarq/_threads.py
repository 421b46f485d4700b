"""``--threads N`` for every CPU thread pool a tarq command uses in this process.

* PyTorch's intra-op pool (OpenMP) and, while it is still settable, its inter-op pool;
* tarq's native kernels (``tarq._C``'s OpenMP pool), through ``tarq.kernels.set_num_threads`` when the kernels
  package exposes it (it owns that pool);
* ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` for libraries that read them when they
  start (tokenizers' Rayon pool reads ``RAYON_NUM_THREADS``).

The ggml runtimes run in worker processes that get their thread counts explicitly (``tarq.eval.runtimes``).
"""
from __future__ import annotations

import os


def set_threads(threads: int) -> int:
    threads = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:   # settable only before the first inter-op parallel work; later calls are refused
        pass
    try:
        from tarq import kernels
    except ImportError:
        return threads
    setter = getattr(kernels, "set_num_threads", None)
    if setter is not None:
        setter(threads)
    return threads
