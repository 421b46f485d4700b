"""Rewrite the result tables in benchmarks/README.md from the committed JSON in benchmarks/results/.

Each table sits between ``<!-- results:NAME:begin -->`` and ``<!-- results:NAME:end -->`` and is produced by the
same ``render_markdown`` the benchmark script prints with, so README and JSON cannot drift.

    python benchmarks/summarize.py            # rewrite README tables
    python benchmarks/summarize.py --check    # exit 1 if README is out of date (used by the smoke test)
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, RESULTS_DIR, read_json  # noqa: E402

README = BENCH_DIR / "README.md"
# marker name -> (script module, result file)
SECTIONS = {
    "accuracy": ("bench_accuracy", "bench_accuracy.json"),
    "accuracy_n128": ("bench_accuracy", "bench_accuracy_n128.json"),
    "accuracy_full": ("bench_accuracy", "bench_accuracy_full.json"),
    "deployment": ("bench_deployment", "bench_deployment.json"),
    "deployment_iq4_nl": ("bench_deployment", "bench_deployment_iq4_nl.json"),
    "deployment_gpu": ("bench_deployment", "bench_deployment_gpu.json"),
    "quant_speed": ("bench_quant_speed", "bench_quant_speed.json"),
    "quant_speed_n128": ("bench_quant_speed", "bench_quant_speed_n128.json"),
    "quant_speed_n128_v2": ("bench_quant_speed", "bench_quant_speed_n128_v2.json"),
    "quant_speed_n128_v3": ("bench_quant_speed", "bench_quant_speed_n128_v3.json"),
    "quant_speed_types": ("bench_quant_speed", "bench_quant_speed_types.json"),
    "quant_speed_gpu": ("bench_quant_speed", "bench_quant_speed_gpu.json"),
    "gptq_cuda": ("bench_gptq_cuda", "bench_gptq_cuda.json"),
    "runtime_workers": ("bench_runtime_workers", "bench_runtime_workers.json"),
    "fuzz_inputs": ("fuzz_inputs", "fuzz_inputs.json"),
    "lattice_error": ("bench_lattice_error", "bench_lattice_error.json"),
    "lattice_error_base": ("bench_lattice_error", "bench_lattice_error_base.json"),
    "cpu_family": ("bench_cpu_family", "bench_cpu_family.json"),
    "portable_numerics": ("bench_portable_numerics", "bench_portable_numerics.json"),
    "portable_default_tiny": ("bench_paired_systems", "portable_default_tiny_q4_0.json"),
    "portable_default_tiny_default_policy": ("bench_paired_systems", "portable_default_tiny_q4_0_default_policy.json"),
    "stop_margins_tiny": ("bench_stop_margins", "stop_margins_tiny_q4_0.json"),
    "stop_margins_base": ("bench_stop_margins", "stop_margins_base_q3_k.json"),
    "stop_margins_base_uqm": ("bench_stop_margins", "stop_margins_base_q3_k_uqm.json"),
    "stop_margins_tiny_builds": ("bench_stop_margins", "stop_margins_tiny_q4_0_builds.json"),
    "stop_margins_base_builds": ("bench_stop_margins", "stop_margins_base_q3_k_builds.json"),
    "layer_error_tiny": ("bench_layer_error", "layer_error_tiny_q4_0.json"),
    "layer_error_base": ("bench_layer_error", "layer_error_base_q3_k.json"),
    "layer_error_tiny_augment": ("bench_layer_error", "layer_error_tiny_q4_0_augment.json"),
    "layer_error_base_augment": ("bench_layer_error", "layer_error_base_q3_k_augment.json"),
    "stop_margins_tiny_augment": ("bench_stop_margins", "stop_margins_tiny_q4_0_augment.json"),
    "stop_margins_tiny_bias": ("bench_stop_margins", "stop_margins_tiny_q4_0_bias_correction.json"),
    "default_candidate_tiny": ("bench_paired_systems", "default_candidate_tiny_q4_0.json"),
    "default_candidate_tiny_default_policy": ("bench_paired_systems", "default_candidate_tiny_q4_0_default_policy.json"),
    "stop_margins_tiny_default": ("bench_stop_margins", "stop_margins_tiny_q4_0_default.json"),
    "default_candidate_base_uqm": ("bench_paired_systems", "default_candidate_base_q4_0_uqm.json"),
    "stop_margins_tiny_stop_weights": ("bench_stop_margins", "stop_margins_tiny_q4_0_stop_weights.json"),
    "stop_weights_tiny": ("bench_paired_systems", "stop_weights_tiny_q4_0.json"),
    "default_candidate_base_asterisk": ("bench_paired_systems", "default_candidate_base_q4_0_asterisk.json"),
    "default_candidate_base_default_policy": ("bench_paired_systems", "default_candidate_base_q4_0_default_policy.json"),
    "default_candidate_base_tts": ("bench_paired_systems", "default_candidate_base_q4_0_tts.json"),
    "gptq_base_greedy": ("bench_paired_systems", "gptq_base_q4_0_greedy.json"),
    "gptq_base_default_policy": ("bench_paired_systems", "gptq_base_q4_0_default_policy.json"),
    "splice_base_foldoc": ("bench_paired_systems", "splice_base_q4_0_foldoc.json"),
    "encoder_rtn_tiny": ("bench_paired_systems", "encoder_rtn_tiny_q4_0.json"),
    "encoder_rtn_tiny_default_policy": ("bench_paired_systems", "encoder_rtn_tiny_q4_0_default_policy.json"),
    "encoder_rtn_base_foldoc": ("bench_paired_systems", "encoder_rtn_base_q4_0_foldoc.json"),
    "lattice_refit_tiny": ("bench_lattice_error", "lattice_refit_tiny.json"),
    "lattice_refit_base": ("bench_lattice_error", "lattice_refit_base.json"),
    "layer_error_refit_tiny": ("bench_layer_error", "layer_error_refit_tiny_q4_0.json"),
    "refit_tiny": ("bench_paired_systems", "refit_tiny_q4_0.json"),
    "refit_gptq_tiny": ("bench_paired_systems", "refit_gptq_tiny_q4_0.json"),
    "refit_tiny_default_policy": ("bench_paired_systems", "refit_tiny_q4_0_default_policy.json"),
    "iq4_nl_default_tiny": ("bench_paired_systems", "iq4_nl_default_tiny.json"),
    "iq4_nl_default_tiny_default_policy": ("bench_paired_systems", "iq4_nl_default_tiny_default_policy.json"),
    "iq4_nl_default_base": ("bench_paired_systems", "iq4_nl_default_base.json"),
    "failure_origin_tiny": ("bench_failure_origin", "failure_origin_tiny.json"),
    "failure_origin_base": ("bench_failure_origin", "failure_origin_base.json"),
    "failure_origin_q8_0_tiny": ("bench_failure_origin", "failure_origin_q8_0_tiny.json"),
    "failure_origin_q8_0_base": ("bench_failure_origin", "failure_origin_q8_0_base.json"),
    "iq4_nl_default_base_tts": ("bench_paired_systems", "iq4_nl_default_base_tts.json"),
    "iq4_nl_default_base_austen": ("bench_paired_systems", "iq4_nl_default_base_austen.json"),
    "iq4_nl_default_base_default_policy": ("bench_paired_systems", "iq4_nl_default_base_default_policy.json"),
    "scale_tune_tiny": ("bench_paired_systems", "scale_tune_tiny_iq4_nl.json"),
    "token_kl_tiny": ("bench_token_kl", "token_kl_tiny_iq4_nl.json"),
    "token_kl_tiny_methods": ("bench_token_kl", "token_kl_tiny_iq4_nl_methods.json"),
}


def render_section(name: str, results_dir: Path = RESULTS_DIR) -> str:
    module, filename = SECTIONS[name]
    path = results_dir / filename
    if not path.exists():
        return f"_No result yet: run the benchmark to create `benchmarks/results/{filename}`._"
    result = read_json(path)
    body = importlib.import_module(module).render_markdown(result)
    return f"Source: `benchmarks/results/{filename}` (finished {result['meta'].get('finished', '?')}).\n\n{body}"


def rewrite(text: str, results_dir: Path = RESULTS_DIR) -> str:
    for name in SECTIONS:
        pattern = re.compile(rf"(<!-- results:{name}:begin -->\n)(?:.*?\n)?(<!-- results:{name}:end -->)", re.S)
        if pattern.search(text):
            body = render_section(name, results_dir)
            text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if README.md is out of date")
    p.add_argument("--readme", type=Path, default=README)
    args = p.parse_args(argv)
    old = args.readme.read_text()
    new = rewrite(old)
    if args.check:
        if new != old:
            print(f"{args.readme} is out of date: run python benchmarks/summarize.py", file=sys.stderr)
            return 1
        print(f"{args.readme} matches benchmarks/results/*.json")
        return 0
    if new != old:
        tmp = args.readme.with_name(args.readme.name + ".tmp")
        tmp.write_text(new)
        os.replace(tmp, args.readme)
        print(f"updated {args.readme}")
    else:
        print(f"{args.readme} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
