"""CUDA sweep: the sources must compile with nvcc here; numerics need a GPU (marked `cuda`, skipped without)."""
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


@pytest.mark.parametrize("source", ["sweep.cu", "validate_sweep.cu"])
def test_cuda_sources_compile_with_nvcc(source, tmp_path):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not installed")
    cmd = [nvcc, "-std=c++17", "-O3", "-arch=sm_80", "-I", str(ROOT / "csrc"), "-c", str(CUDA_DIR / source),
           "-o", str(tmp_path / (source + ".o"))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"nvcc failed on {source}:\n{proc.stderr}"
    assert (tmp_path / (source + ".o")).stat().st_size > 0


def _cuda_ready():
    try:
        from tarq import _C
    except ImportError:
        return False
    return bool(getattr(_C, "has_cuda", False)) and torch.cuda.is_available()


needs_gpu = pytest.mark.skipif(not _cuda_ready(), reason="needs a CUDA device and tarq._C built with nvcc")


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("m,n,fmt_name,group", [(384, 384, "q4_0", 32), (1536, 384, "q4_0", 128),
                                                 (384, 1536, "q8_0", 32), (512, 2048, "q4_0", 64)])
def test_cuda_sweep_matches_cpu(m, n, fmt_name, group):
    from tarq.formats import get_format
    from tarq.kernels import native, reference as ref
    fmt = get_format(fmt_name, group)
    g = torch.Generator().manual_seed(m + n)
    X = torch.randn(2 * n, n, generator=g)
    U = ref.cholesky_inverse_upper(X.T @ X).U
    W = torch.randn(m, n, generator=g) * 0.05
    cpu = native.gptq_sweep(W, U, fmt)
    gpu = native.gptq_sweep(W.cuda(), U.cuda(), fmt)
    assert gpu.codes.is_cuda
    assert float((gpu.codes.cpu() == cpu.codes).double().mean()) >= 0.999
    assert float(gpu.err) == pytest.approx(float(cpu.err), rel=1e-5)
    assert torch.equal(gpu.dequant.cpu(), gpu.codes.cpu().float() * gpu.scales.cpu().float().repeat_interleave(group, 1))


@pytest.mark.cuda
@needs_gpu
def test_cuda_validation_harness_runs(tmp_path):
    nvcc = _nvcc()
    exe = tmp_path / "validate_sweep"
    srcs = [CUDA_DIR / "validate_sweep.cu", CUDA_DIR / "sweep.cu"] + [
        ROOT / "csrc" / s for s in ("sweep.cpp", "cholesky.cpp", "dispatch.cpp", "kernels_generic.cpp", "blas.cpp")]
    subprocess.run([nvcc, "-O3", "-std=c++17", "-Xcompiler", "-fopenmp", "-I", str(ROOT / "csrc"),
                    *map(str, srcs), "-o", str(exe)], check=True, timeout=600)
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.cuda
@needs_gpu
def test_cuda_batched_shared_u_matches_cpu():
    from tarq.formats import get_format
    from tarq.kernels import native, reference as ref
    fmt = get_format("q4_0")
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
    from tarq.formats import get_format
    from tarq.kernels import native, reference as ref

    monkeypatch.setattr(native, "HAS_CUDA", False)
    fmt = get_format("q4_0")
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
