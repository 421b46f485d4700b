"""CUDA sweep: the sources must compile with nvcc here (the lattice routines for every type are compiled into the
kernel, so a type whose native code does not build for the device fails this test); numerics need a GPU (marked
`cuda`, skipped without)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    cand = Path("/usr/local/cuda/bin/nvcc")
    return str(cand) if cand.exists() else None


HARNESS_SOURCES = ["sweep.cpp", "sweep_generic.cpp", "lattice_ops.cpp", "cholesky.cpp", "dispatch.cpp",
                   "kernels_generic.cpp", "blas.cpp", "cholesky_blas.cpp"]


@pytest.fixture(scope="module")
def harness_build(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """docs/kernels.md's stand-alone harness, built once per run (nvcc takes ~30 s) for the link check and, on a
    GPU, the run."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not installed")
    exe = tmp_path_factory.mktemp("harness") / "validate_sweep"
    srcs = [CUDA_DIR / "validate_sweep.cu", CUDA_DIR / "sweep.cu", CUDA_DIR / "gemm.cu"] + [
        ROOT / "csrc" / s for s in HARNESS_SOURCES]
    return exe, subprocess.run([nvcc, "-O3", "-std=c++17", "--fmad=false", "-Xcompiler",
                                "-fopenmp,-ffp-contract=off", "-I", str(ROOT / "csrc"), *map(str, srcs), "-o",
                                str(exe)], capture_output=True, text=True, timeout=600)


def test_cuda_validation_harness_compiles_and_links(harness_build):
    """docs/kernels.md's stand-alone harness command builds: every symbol the CPU reference needs is in its
    source list (the first GPU run found cholesky_blas.cpp missing: a link error no compile-only check sees)."""
    _, proc = harness_build
    assert proc.returncode == 0, proc.stderr
    doc = (ROOT / "docs" / "kernels.md").read_text()
    assert all(f"csrc/{s}" in doc for s in HARNESS_SOURCES), "docs/kernels.md's harness command lacks a source"


@pytest.mark.parametrize("source,fmad", [("sweep.cu", "false"), ("gemm.cu", "true")])
def test_cuda_sources_compile_with_nvcc(source, fmad, tmp_path):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not installed")
    obj = tmp_path / (source + ".o")
    cmd = [nvcc, "-std=c++17", "-O3", "-arch=sm_80", f"--fmad={fmad}", "-I", str(ROOT / "csrc"), "-c",
           str(CUDA_DIR / source), "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"nvcc failed on {source}:\n{proc.stderr}"
    assert obj.stat().st_size > 0
    if source == "sweep.cu":
        # every type's fit and rounding is in the device code (fit_group dispatches on the type id at run time,
        # so all branches are compiled), and every lazy-block width has its kernel
        blob = obj.read_bytes()
        assert b"fit_and_expand" in blob and b"row_sigma2_kernel" in blob
        for S in range(1, 9):
            assert f"sweep_block_kernelILi{S}E".encode() in blob, S


def _cuda_ready():
    try:
        from tarq import _C
    except ImportError:
        return False
    return bool(getattr(_C, "has_cuda", False)) and torch.cuda.is_available()


needs_gpu = pytest.mark.skipif(not _cuda_ready(), reason="needs a CUDA device and tarq._C built with nvcc")


def _lattices():
    from tarq.ggml import QUANT_TYPES
    return [(name, g, fit) for name, t in QUANT_TYPES.items() for g in t.solver_groups[:1] for fit in ("plain", "weighted")]


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("m,n", [(384, 512), (512, 2048)])
def test_cuda_sweep_matches_cpu_for_every_type(m, n):
    import numpy as np

    from tarq.ggml import make_lattice
    from tarq.kernels import native, reference as ref
    g = torch.Generator().manual_seed(m + n)
    X = torch.randn(2 * n, n, generator=g)
    H = X.T @ X
    U = ref.cholesky_inverse_upper(H).U
    W = torch.randn(m, n, generator=g) * 0.05
    imp = H.diagonal() / H.diagonal().mean()
    for name, group, fit in _lattices():
        lat = make_lattice(name, group, fit)
        cpu = native.gptq_sweep(W, U, lat, importance=imp)
        gpu = native.gptq_sweep(W.cuda(), U.cuda(), lat, importance=imp)
        assert gpu.codes.is_cuda
        same = float((gpu.codes.cpu() == cpu.codes).double().mean())
        assert same >= 0.999, (name, fit, same)
        assert float(gpu.err) == pytest.approx(float(cpu.err), rel=1e-5), (name, fit)
        # the GPU's values are exactly ggml's to_float of the bytes it chose
        assert np.array_equal(gpu.dequant.cpu().numpy(), lat.qtype.dequantize(gpu.data(), n)), (name, fit)


@pytest.mark.cuda
@needs_gpu
def test_cuda_validation_harness_runs(harness_build):
    exe, built = harness_build
    assert built.returncode == 0, built.stderr
    for args in ([], ["512", "512", "12", "256", "128"], ["384", "384", "20", "32", "128"]):  # Q4_0, Q4_K, IQ4_NL
        proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.cuda
@needs_gpu
def test_cuda_batched_shared_u_matches_cpu():
    from tarq.ggml import make_lattice
    from tarq.kernels import native, reference as ref
    fmt = make_lattice("q4_0")
    g = torch.Generator().manual_seed(5)
    X = torch.randn(768, 384, generator=g)
    U = ref.cholesky_inverse_upper(X.T @ X).U
    Ws = [torch.randn(m, 384, generator=g) * 0.05 for m in (384, 384, 96)]
    gpu = native.gptq_sweep_batched([W.cuda() for W in Ws], U.cuda(), fmt)
    for W, r in zip(Ws, gpu):
        cpu = native.gptq_sweep(W, U, fmt)
        assert float((r.codes.cpu() == cpu.codes).double().mean()) >= 0.999
        assert float(r.err) == pytest.approx(float(cpu.err), rel=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_without_the_cuda_sweep_fall_back_to_the_cpu(monkeypatch):
    """An extension built without nvcc still quantizes CUDA tensors (`tarq quantize --device cuda`): the sweep
    runs on the CPU and the results come back on the tensors' device, equal to a CPU sweep."""
    from tarq.ggml import make_lattice
    from tarq.kernels import native, reference as ref

    monkeypatch.setattr(native, "HAS_CUDA", False)
    fmt = make_lattice("q4_k")
    g = torch.Generator().manual_seed(7)
    X = torch.randn(512, 256, generator=g)
    U = ref.cholesky_inverse_upper(X.T @ X).U
    Ws = [torch.randn(64, 256, generator=g) * 0.05 for _ in range(2)]
    cpu = native.gptq_sweep_batched(Ws, U, fmt)
    gpu = native.gptq_sweep_batched([W.cuda() for W in Ws], U.cuda(), fmt)
    single = native.gptq_sweep(Ws[0].cuda(), U.cuda(), fmt)
    for c, d in zip(cpu, gpu):
        assert d.codes.is_cuda and torch.equal(d.codes.cpu(), c.codes)
    assert single.codes.is_cuda and torch.equal(single.codes.cpu(), cpu[0].codes)
