"""How to spend CPU threads on whisper.cpp decoding: worker processes × ggml threads, and the cost of isolation.

For each model (whisper.cpp ``.bin``, RTN Q4_0 by default) the same clips (the 32 bundled demo prompts + the first
8 demo calibration sentences, 40 clips, ~80 s of audio) are decoded with the ``whisper.cpp`` backend under every
``WORKERSxTHREADS`` configuration, and once in this process without a worker (pywhispercpp called directly, the
pre-isolation code path) at the smallest thread count. Configurations are interleaved inside each repeat so a drift
in machine load hits all of them; the table reports the median wall time (model load included, as a user pays it)
and whether every configuration produced exactly the same transcripts (thread-count invariance of the output).

    python benchmarks/bench_runtime_workers.py                          # tiny.en + base, 1x1 1x2 2x1, 2 repeats
    python benchmarks/bench_runtime_workers.py --models tiny.en --configs 1x2,2x1 --repeats 3
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _artifacts import baseline_bin  # noqa: E402
from _common import (RunMeta, add_common_args, ensure_tarq_importable, fmt_num, markdown_table, median,  # noqa: E402
                     pyplot, save_and_report, save_plot)

N_CLIPS = 40


def demo_clips(n: int = N_CLIPS):
    ensure_tarq_importable()
    from tarq.cli.demo import bundled_data_dir
    from tarq.data import load_audio, load_dataset

    root = bundled_data_dir()
    utts = (load_dataset(root / "eval") + load_dataset(root / "calib"))[:n]
    return [u.id for u in utts], [load_audio(u.audio) for u in utts]


def _cpu_s() -> float:
    """CPU seconds (user + sys) of this process and of its finished children (the runtime workers)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def decode(model: Path, audios, workers: int | None, threads: int) -> tuple[list[str], float, float]:
    """(texts, wall seconds incl. model load, CPU seconds); workers=None: in this process, no isolation."""
    c0 = _cpu_s()
    t0 = time.perf_counter()
    if workers is None:
        from tarq.eval.runtimes.policy import get_policy
        from tarq.eval.runtimes.worker import WhisperCppEngine

        pol = get_policy("greedy")
        engine = WhisperCppEngine(str(model), threads, "en", pol.strategy, pol.whisper_cpp)
        texts = [engine.transcribe(a) for a in audios]
        del engine
    else:
        from tarq.eval import get_backend

        with get_backend("whisper.cpp", model, threads=workers * threads, workers=workers) as backend:
            texts = backend.transcribe(audios)
    return texts, time.perf_counter() - t0, _cpu_s() - c0


def parse_configs(spec: str) -> list[tuple[int, int]]:
    out = []
    for item in spec.split(","):
        w, t = item.lower().split("x")
        out.append((int(w), int(t)))
    return out


def run(args) -> dict:
    meta = RunMeta.start("bench_runtime_workers")
    ids, audios = demo_clips()
    audio_s = sum(len(a) for a in audios) / 16000
    configs = parse_configs(args.configs)
    result = {"clips": ids, "audio_s": audio_s, "configs": [f"{w}x{t}" for w, t in configs], "models": {}}
    for model in args.models.split(","):
        binf = baseline_bin(model, args.kind).path
        runs = {f"{w}x{t}": [] for w, t in configs}
        inproc = f"in-process 1x{min(t for _, t in configs)}"
        runs[inproc] = []
        cpu = {k: [] for k in runs}
        texts = {}
        for rep in range(args.repeats):
            for label, (w, t) in [(f"{w}x{t}", (w, t)) for w, t in configs] + [(inproc, (None, min(t for _, t in configs)))]:
                out, wall, cpu_s = decode(binf, audios, w, t)
                runs[label].append(wall)
                cpu[label].append(cpu_s)
                texts.setdefault(label, out)
                identical = out == texts[next(iter(texts))]
                print(f"[{model}] rep {rep + 1} {label}: {wall:.1f} s wall, {cpu_s:.1f} CPU-s, load "
                      f"{os.getloadavg()[0]:.1f} (transcripts identical to first: {identical})", flush=True)
                if not identical:
                    texts[label + f"#rep{rep}"] = out
        first = next(iter(texts.values()))
        diffs = {label: [ids[i] for i, (a, b) in enumerate(zip(first, t)) if a != b] for label, t in texts.items()}
        result["models"][model] = {"bin": binf.name, "wall_s": runs,
                                   "median_s": {k: median(v) for k, v in runs.items()},
                                   "cpu_s": cpu, "median_cpu_s": {k: median(v) for k, v in cpu.items()},
                                   "transcripts_identical": all(not d for d in diffs.values()),
                                   "differing_clips": {k: v for k, v in diffs.items() if v}}
    result["meta"] = meta.finish()
    return result


def render_markdown(res: dict) -> str:
    if "models" not in res:
        return "_no result_"
    labels = [c for c in next(iter(res["models"].values()))["median_s"]]
    rows = []
    for model, r in res["models"].items():
        rows.append([model, r["bin"]] + [f"{fmt_num(r['median_s'].get(k), 1)} / {fmt_num(r['median_cpu_s'].get(k), 1)}"
                                         for k in labels] + ["yes" if r["transcripts_identical"] else "no"])
    head = (f"{len(res['clips'])} clips, {res['audio_s']:.0f} s of audio; median wall s / CPU s incl. model load "
            f"(workers x threads each); load average {res['meta'].get('loadavg_start')} -> "
            f"{res['meta'].get('loadavg_end')}\n\n")
    return head + markdown_table(["model", "file"] + labels + ["same texts"], rows)


def plot(res: dict, path: Path) -> None:
    if "models" not in res:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = list(next(iter(res["models"].values()))["median_s"])
    width = 0.8 / max(1, len(res["models"]))
    for j, (model, r) in enumerate(res["models"].items()):
        ax.bar([i + j * width for i in range(len(labels))], [r["median_s"][k] or 0 for k in labels], width,
               label=model)
    ax.set_xticks([i + width * (len(res["models"]) - 1) / 2 for i in range(len(labels))], labels, fontsize=8)
    ax.set_ylabel("wall s (40 clips)")
    ax.legend()
    save_plot(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tiny.en,base")
    p.add_argument("--kind", default="q4_0", choices=("f16", "q8_0", "q4_0"), help="which whisper.cpp baseline file")
    p.add_argument("--configs", default="1x1,1x2,2x1", help="WORKERSxTHREADS list")
    p.add_argument("--repeats", type=int, default=2)
    add_common_args(p, "bench_runtime_workers.json")
    args = p.parse_args(argv)
    if args.dry_run:
        print(f"would decode {N_CLIPS} demo clips with {args.models} ({args.kind}) under {args.configs} "
              f"+ in-process, {args.repeats} repeats")
        return 0
    save_and_report(args.out, run(args), plot, render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
