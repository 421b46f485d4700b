"""Does `tarq quantize` give the same file on another CPU? Portable against native numerics, CPUs emulated.

The same build command runs on this machine and under qemu-user emulating other x86 CPUs (``-cpu MODEL``: the
libraries' per-CPU kernel choices see that CPU's vendor and instruction sets through CPUID), once per numerics mode
(``TARQ_NUMERICS=portable``, tarq's default, and ``native``; tarq/_numerics.py). Each build is compared with this
machine's build in the same mode, ggml block by ggml block of quantized.safetensors. Baseline in the same run: the
native mode, whose files are expected to differ wherever the emulated CPU picks other kernels.

    python benchmarks/bench_portable_numerics.py --model tiny.en --n-calib 4 --cpus native,Haswell-v4,EPYC-Rome

What emulation covers: the CPU as the libraries see it (vendor string, AVX2/AVX-512 flags). What it does not:
a real CPU's timing and memory (wall times under qemu are emulation times, not comparable), and CPU features
qemu's TCG lacks (AVX-512: an emulated CPU can only be one without it). Needs ``qemu-x86_64`` (Debian: qemu-user).
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (DEFAULT_DATA_ROOT, RESULTS_DIR, RunMeta, bench_env, check_child, ensure_tarq_importable,  # noqa: E402
                     fmt_num, markdown_table, pyplot, read_json, run_measured, save_and_report, save_plot, tarq_cli)

HOST = "native"
RANDOM_MOONSHINE = "random-moonshine"


def build(model: str, calib: Path, n_calib: int, cpu: str, mode: str, out: Path, timeout: float) -> dict:
    """One `tarq quantize` of ``model`` (the default method for q4_0) on ``cpu`` (HOST or a qemu model)."""
    cmd = tarq_cli("quantize", model, "--format", "q4_0", "--calib", str(calib), "--n-calib", str(n_calib),
                   "--no-progress", "--threads", "1", "--out", str(out))
    if cpu != HOST:
        cmd = ["qemu-x86_64", "-cpu", cpu, *cmd]
    ensure_tarq_importable()
    from tarq._numerics import ENV_VAR, PORTABLE_X86_PINS

    env = bench_env(threads=1)
    for var, _ in PORTABLE_X86_PINS.values():   # set here if this process imported tarq portable: not the child's
        env.pop(var, None)
    env[ENV_VAR] = mode
    res = run_measured(cmd, env=env, timeout=timeout)
    check_child(res, f"tarq quantize on {cpu} ({mode})")
    report = read_json(out / "report.json")
    digest = hashlib.sha256((out / "quantized.safetensors").read_bytes()).hexdigest()
    return {"cpu": cpu, "mode": mode, "wall_s": round(res.wall_s, 1), "sha256": digest,
            "numerics": report["versions"]["numerics"]}


def block_differences(a: Path, b: Path) -> dict:
    """Tensors and ggml blocks whose bytes differ between two quantized-model directories."""
    ensure_tarq_importable()
    from tarq.qmodel import load_quantized_dir

    qa, qb = load_quantized_dir(a).quantized, load_quantized_dir(b).quantized
    if set(qa) != set(qb):
        raise SystemExit(f"{a} and {b} hold different tensors")
    tensors = blocks = blocks_differ = 0
    for name, ta in qa.items():
        x, y = ta.numpy(), qb[name].numpy()
        per_block = ta.qtype.type_size
        xb = x.reshape(-1, per_block)
        yb = y.reshape(-1, per_block)
        differ = int((xb != yb).any(axis=1).sum())
        tensors += differ > 0
        blocks += xb.shape[0]
        blocks_differ += differ
    return {"tensors": len(qa), "tensors_differ": tensors, "blocks": blocks, "blocks_differ": blocks_differ}


def run(args) -> dict:
    meta = RunMeta.start("bench_portable_numerics")
    cpus = [HOST] + [c for c in args.cpus.split(",") if c and c != HOST]   # the reference is built first
    if any(c != HOST for c in cpus) and shutil.which("qemu-x86_64") is None:
        raise SystemExit("qemu-x86_64 not found (Debian: apt-get install qemu-user); it emulates the other CPUs")
    builds = []
    with tempfile.TemporaryDirectory(prefix="tarq-portable-") as tmp:
        model = args.model
        if model == RANDOM_MOONSHINE:
            ensure_tarq_importable()
            from tarq.testing import write_random_moonshine

            model = str(write_random_moonshine(Path(tmp) / "random-moonshine"))
        dirs: dict[tuple[str, str], Path] = {}
        for mode in args.modes.split(","):
            for cpu in cpus:
                out = Path(tmp) / f"{mode}-{cpu}"
                print(f"building on {cpu} ({mode}) ...", file=sys.stderr, flush=True)
                rec = build(model, args.calib, args.n_calib, cpu, mode, out, args.timeout)
                dirs[cpu, mode] = out
                rec["identical_to_host"] = None
                if cpu != HOST:
                    rec.update(block_differences(dirs[HOST, mode], out))
                    host_sha = next(b["sha256"] for b in builds if b["cpu"] == HOST and b["mode"] == mode)
                    rec["identical_to_host"] = rec["sha256"] == host_sha
                builds.append(rec)
    return {"model": args.model, "calib": str(args.calib), "n_calib": args.n_calib, "builds": builds,
            "meta": meta.finish()}


def render_markdown(result: dict) -> str:
    rows = []
    for b in result["builds"]:
        n = b["numerics"]
        where = "this machine" if b["cpu"] == HOST else f"qemu `-cpu {b['cpu']}`"
        kernels = f"ATen {n.get('aten_capability')}, OpenBLAS {n.get('openblas_core')}, MKL_CBWR {n.get('MKL_CBWR')}"
        if b["cpu"] == HOST:
            same = "(reference)"
            blocks = "—"
        else:
            same = "yes" if b["identical_to_host"] else "no"
            blocks = (f"{b['blocks_differ']} / {b['blocks']} ({fmt_num(100 * b['blocks_differ'] / b['blocks'], 1)} %), "
                      f"{b['tensors_differ']} / {b['tensors']} tensors")
        rows.append([b["mode"], where, kernels, b["sha256"][:12], same, blocks])
    machine = result["meta"]["machine"]
    return (f"`tarq quantize {result['model']} --format q4_0` (default method), {result['n_calib']} utterances of "
            f"{Path(result['calib']).name}, `--threads 1`; this machine: {machine.get('cpu')} "
            f"({machine.get('cpu_id', '?')}). Each build against this machine's build in the same mode.\n\n"
            + markdown_table(["numerics", "CPU", "kernels the libraries picked", "sha256", "same file",
                              "Q4_0 blocks that differ"], rows, align="llllll"))


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    others = [b for b in result["builds"] if b["cpu"] != HOST]
    fig, ax = plt.subplots(figsize=(7, 0.55 * max(len(others), 1) + 1.4))
    names = [f"{b['mode']} · {b['cpu']}" for b in others]
    share = [100 * b["blocks_differ"] / b["blocks"] for b in others]
    colors = ["#4477aa" if b["mode"] == "portable" else "#cc6677" for b in others]
    ax.barh(range(len(others)), share, color=colors)
    for i, s in enumerate(share):
        ax.text(s + 1, i, f"{s:.1f} %", va="center", fontsize=8)
    ax.set_yticks(range(len(others)), names, fontsize=8)
    ax.set_xlim(0, 110)
    ax.set_xlabel("Q4_0 blocks that differ from this machine's build, %")
    ax.set_title(f"Same command, emulated CPUs ({result['model']})", fontsize=10)
    fig.tight_layout()
    save_plot(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny.en",
                   help=f"a model tarq quantize takes, or {RANDOM_MOONSHINE!r}: tarq.testing's small random Moonshine "
                        "(minutes under emulation rather than an hour for tiny.en)")
    p.add_argument("--calib", type=Path, default=DEFAULT_DATA_ROOT / "austen-tts-calib")
    p.add_argument("--n-calib", type=int, default=4)
    p.add_argument("--cpus", default="native,Haswell-v4,EPYC-Rome",
                   help="'native' (this machine) and qemu-x86_64 CPU models (qemu-x86_64 -cpu help)")
    p.add_argument("--modes", default="portable,native")
    p.add_argument("--timeout", type=float, default=7200, help="seconds per build")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "bench_portable_numerics.json")
    p.add_argument("--render", action="store_true", help="re-render an existing --out without building")
    args = p.parse_args(argv)
    result = None if args.render else run(args)
    save_and_report(args.out, result, plot, render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
