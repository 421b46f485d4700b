"""How well does the subsampled padding (``--encoder-frames sampled``) approximate the full-window H?

For real calibration utterances, every encoder Linear group of a real model is fed its FP-model inputs
(stage-wise forward, docs/methods.md §2) and two second moments are formed per group: H_all over all 1500
frames of the 30-s window and H_k with the padding frames after the speech (+ margin) subsampled by stride k
and weighted k. Reported per group and stride:

* ``rel_fro`` = ‖H_k − H_all‖_F / ‖H_all‖_F;
* ``loss_ratio`` = tr(ΔW_k H_all ΔW_kᵀ) / tr(ΔW_all H_all ΔW_allᵀ): the GPTQ proxy loss *under the exact H* of
  the weights quantized (Q4_0, GPTQ) with H_k vs with H_all (1.0 = no loss; this is what the approximation
  costs the objective the solver minimises);
* ``rows_share``: rows entering the statistics relative to the full window (∝ the statistics' cost).

    python benchmarks/bench_padding_stats.py --model tiny.en --n-utts 8      # ~2 min on 2 cores
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (RESULTS_DIR, RunMeta, ensure_tarq_importable, fmt_num, markdown_table,  # noqa: E402
                     resolve_data_root, write_json)

CALIB_SET = "austen-tts-calib"


def run(args) -> dict:
    ensure_tarq_importable()
    import torch

    from tarq.calib.pipeline import CalibConfig, _select_rows, select_subset
    from tarq.calib.driver import prepare_samples
    from tarq.calib.stats import StatsAccumulator
    from tarq.data import load_dataset
    from tarq.ggml import make_lattice
    from tarq.kernels import cholesky_inverse_upper, gptq_sweep_batched, set_num_threads
    from tarq.methods.base import h_inner
    from tarq.models import load_model
    from tarq.models.adapter import FRAMES, get_adapter

    meta = RunMeta.start("padding_stats")
    set_num_threads(args.threads)
    loaded = load_model(args.model)
    model = loaded.model.eval()
    adapter = get_adapter("whisper")
    utts = select_subset(load_dataset(resolve_data_root(args.data_root) / CALIB_SET), args.n_utts, args.seed)
    samples, info = prepare_samples(loaded, adapter, utts, CalibConfig(n_calib=args.n_utts, progress=False))
    fmt = make_lattice("q4_0", 32)
    cfgs = {"all": CalibConfig(encoder_frames="all")}
    cfgs.update({f"{pick[0]}{k}": CalibConfig(encoder_frames="sampled", pad_stride=k, pad_margin=args.margin,
                                              pad_pick=pick)
                 for k in args.strides for pick in args.picks})
    rows = []
    t_start = time.perf_counter()
    with torch.inference_mode():
        states = [adapter.init_state(model, s) for s in samples]
        for block in adapter.blocks(model):
            if not block.name.startswith("model.encoder."):
                break
            for si, stage in enumerate(block.stages):
                accs = {}
                for g in stage.groups:
                    if g.domain != FRAMES:
                        continue
                    accs[g.key] = {name: StatsAccumulator(model.get_parameter(g.weights[0]).shape[1], False)
                                   for name in cfgs}
                for i, s in enumerate(samples):
                    xs = adapter.stage_inputs(model, block, si, states[i], s, set(accs))
                    for key, per_cfg in accs.items():
                        for name, acc in per_cfg.items():
                            acc.add(*_select_rows(xs[key], None, s, FRAMES, cfgs[name], utterance=i))
                    states[i] = adapter.advance(model, block, si, states[i], s)
                for key, per_cfg in accs.items():
                    g = next(g for g in stage.groups if g.key == key)
                    Ws = [model.get_parameter(n).detach().float() for n in g.weights]
                    stats = {name: acc.finalize() for name, acc in per_cfg.items()}
                    H_all = stats["all"].H
                    rows_all = stats["all"].n_common

                    def loss(H):
                        chol = cholesky_inverse_upper(H, 0.01)
                        res = gptq_sweep_batched(Ws, chol.U, fmt)
                        return sum(h_inner(W - r.dequant, W - r.dequant, H_all) for W, r in zip(Ws, res))

                    base = loss(H_all)
                    for name in cfgs:
                        if name == "all":
                            continue
                        H = stats[name].H
                        n_rows = sum(_select_rows(torch.empty(1500, 1), None, s, FRAMES, cfgs[name],
                                                  utterance=j)[0].shape[0] for j, s in enumerate(samples))
                        rows.append({"group": key, "stride": int(name[1:]), "pick": cfgs[name].pad_pick,
                                     "rel_fro": float(torch.linalg.norm(H - H_all) / torch.linalg.norm(H_all)),
                                     "loss_ratio": loss(H) / base if base > 0 else None,
                                     "rows_share": n_rows / (1500 * len(samples)),
                                     "weighted_positions": stats[name].n_common, "positions_all": rows_all})
                    print(f"{key}: " + ", ".join(f"{r['pick'][0]}{r['stride']} fro {r['rel_fro']:.2e} loss x{r['loss_ratio']:.4f}"
                                                 for r in rows if r["group"] == key), flush=True)
    return {"meta": meta.finish(),
            "config": {"model": args.model, "n_utts": args.n_utts, "seed": args.seed, "strides": args.strides,
                       "margin": args.margin, "threads": args.threads, "calib": CALIB_SET,
                       "audio_seconds": info["audio_seconds"], "wall_s": time.perf_counter() - t_start},
            "rows": rows}


def render_markdown(result: dict) -> str:
    by_stride: dict[tuple, list[dict]] = {}
    for r in result["rows"]:
        by_stride.setdefault((r["stride"], r.get("pick", "middle")), []).append(r)
    table = []
    for (k, pick), rs in sorted(by_stride.items()):
        fro = sorted(r["rel_fro"] for r in rs)
        loss = sorted(r["loss_ratio"] for r in rs if r["loss_ratio"] is not None)
        table.append([k, pick, fmt_num(rs[0]["rows_share"], 3), fmt_num(fro[len(fro) // 2], 4, suffix=""),
                      fmt_num(fro[-1], 4), fmt_num(loss[len(loss) // 2], 4), fmt_num(loss[-1], 4)])
    c = result["config"]
    return (markdown_table(["pad stride", "pick", "rows share", "median rel. Frobenius err", "max", "median GPTQ loss ratio",
                            "max"], table, "rlrrrrr") +
            f"\n\n{c['model']}, {c['n_utts']} utterances of {c['calib']} ({c['audio_seconds']:.0f} s of audio), "
            f"margin {c['margin']} frames, every encoder Linear group (FP inputs).")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--n-utts", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strides", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8, 16, 32])
    p.add_argument("--margin", type=int, default=16)
    p.add_argument("--picks", type=lambda s: s.split(","), default=["golden", "middle"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "bench_padding_stats.json")
    args = p.parse_args(argv)
    result = run(args)
    write_json(args.out, result)
    print("\n" + render_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
