"""The one results table of a grid: every planned cell's scores, damage against its reference system, failures,
build cost, and the paired comparisons against the baselines, in ``results.json`` (read by the benchmark
README renderer and the plots), ``results.md`` and ``results.png`` (+ ``frontier.png`` for a grid of several
types).

``results.json`` (format ``tarq-grid-results``, version 1)::

    {"spec", "created", "subset": true if any data set is a subset,
     "data": {name: {"path", "n_utts", "n_words", "n_rare", "n_numeral", "limit", "fingerprint"}},
     "systems": [{"key", "label", "model", "method", "type", "seed", "runtime", "policy", "reference",
                  "build": {"bytes", "quantize_s", "export_s", "quantize_timing"}, "cells": {dataset: cell id},
                  "datasets": {name: {"scores", "damage", "damage_detail", "failures", "decode_s", "cache_hits"}},
                  "mean": {...}, "pooled": {"damage", "damage_detail", "failures"} | null,
                  "hyps": {dataset: [hypothesis per utterance]}}],
     "utterances": {dataset: {"ids": [...], "refs": [...]}},
     "comparisons": [{"a", "b", "model", "type", "runtime", "policy",
                      "rows": [{"dataset", "metric", "diff", "ci", "resolvable", "a", "b"}]}],
     "missing": [cell ids without a result],
     "frontier": [one row per quantized system: bytes, bits per weight, pooled damage, WER, failures, paired
                  damage vs each baseline of its type] (only when the grid spans several types; frontier.py)}

Rates are fractions; ``pooled`` damage sums words over all data sets of the system; ``mean`` WER rates are
unweighted means over data sets. A system's ``pooled`` is present only when all its data sets are.
"""
from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT = "tarq-grid-results"
VERSION = 1


def system_key(model, label, type_, seed, runtime, policy) -> str:
    return "/".join(str(x) for x in (model, label, type_ or "-", "-" if seed is None else f"s{seed}", runtime,
                                     policy))


def _combined(system: dict, datasets):
    from tarq.eval import EvalResult

    return EvalResult(system=system, datasets=list(datasets))


def collect(plan) -> dict:
    """Read the cell files of a plan into the results document (no decoding)."""
    spec = plan.spec
    order = [d.name for d in spec.data]
    groups, missing = _read_cells(plan)
    systems, combined = [], {}
    for key, g in groups.items():
        entry, comb = _system_entry(key, g, plan, order)
        systems.append(entry)
        if comb is not None:
            combined[key] = comb
    _score_against_references(systems, combined, order, spec.bootstrap)
    return {"format": FORMAT, "version": VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "spec": spec.to_dict(),
            "subset": any(len(plan.utterances[n]) < plan.totals[n] for n in order),
            "data": _data_summary(plan, combined),
            "systems": systems,
            "utterances": {n: {"ids": [u.id for u in plan.utterances[n]], "refs": [u.text for u in plan.utterances[n]]}
                           for n in order},
            "comparisons": _comparisons(systems, combined, spec.baselines, spec.bootstrap),
            "missing": missing}


def find_system(doc: dict, method: str, policy: str | None = None, *, type_: str | None = None, source) -> dict:
    """The one system of a grid results document (as ``write_results`` wrote it) with this method label, and this
    decoding policy and ggml type when they are given (a grid that ran one method at several types needs the
    type); a ValueError naming ``source`` and the systems it has otherwise."""
    if doc.get("format") != FORMAT:
        raise ValueError(f"{source}: not a tarq grid result (format {doc.get('format')!r})")
    found = [s for s in doc.get("systems", [])
             if s.get("method") == method and (policy is None or s.get("policy") == policy)
             and (type_ is None or s.get("type") == type_)]
    if len(found) != 1:
        have = sorted({f"{s.get('method')}" + (f"@{s['type']}" if s.get("type") else "") + f":{s.get('policy')}"
                       for s in doc.get("systems", [])})
        wanted = (f"method {method!r}" + (f" and type {type_!r}" if type_ is not None else "")
                  + (f" and policy {policy!r}" if policy is not None else ""))
        raise ValueError(f"{source}: {len(found)} systems with {wanted} (has {', '.join(have) or 'none'})")
    return found[0]


def system_datasets(doc: dict, system: dict) -> dict:
    """{data set: DatasetResult} of one system of a grid results document, in the grid's order: its hypotheses
    paired with the grid's ids and references. Sets whose references are redacted (private evaluation sets) or
    that the system did not decode are left out; durations and decode times are not stored per clip there."""
    from tarq.eval.results import DatasetResult

    out = {}
    for name, utts in doc.get("utterances", {}).items():
        hyps = (system.get("hyps") or {}).get(name)
        if utts.get("refs") is None or hyps is None:
            continue
        n = len(utts["ids"])
        out[name] = DatasetResult(name=name, path="", ids=list(utts["ids"]), refs=list(utts["refs"]),
                                  hyps=[h or "" for h in hyps], durations=[None] * n, seconds=[None] * n)
    return out


def _read_cells(plan) -> tuple[dict[str, dict], list[str]]:
    """{system key: {"cells": {data set: cell id}, "results": {data set: EvalResult}, "meta": a Cell}}, and the
    ids of cells without a (readable) result."""
    from tarq.eval import load_result

    groups: dict[str, dict] = {}
    missing = []
    for c in plan.references + plan.cells:
        a = c.artifact
        key = system_key(a.model, a.method.label, a.type, a.seed, c.runtime, c.policy)
        g = groups.setdefault(key, {"cells": {}, "results": {}, "meta": c})
        g["cells"][c.data.name] = c.id
        path = plan.cell_path(c)
        if not path.is_file():
            missing.append(c.id)
            continue
        try:
            g["results"][c.data.name] = load_result(path)
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable cell file (%s); it will be run again", path, e)
            missing.append(c.id)
    return groups, missing


def _system_entry(key: str, g: dict, plan, order: list[str]):
    """(the system's entry of the results document, its data sets as one EvalResult or None)."""
    from .engine import cell_label

    c = g["meta"]
    a = c.artifact
    entry = {"key": key, "label": cell_label(c), "model": a.model, "method": a.method.label,
             "method_name": a.method.method, "options": dict(a.method.options), "type": a.type, "seed": a.seed,
             "runtime": c.runtime, "policy": c.policy, "reference": a.is_reference, "cells": g["cells"],
             "build": {}, "datasets": {}, "hyps": {}, "mean": None, "pooled": None}
    res = [g["results"][n] for n in order if n in g["results"]]
    if not res:
        return entry, None
    entry["build"] = _cell_record(plan, g, order)
    comb = _combined(dict(res[0].system), [r.datasets[0] for r in res])
    entry["mean"] = {k: (None if v != v else v) for k, v in comb.mean().items()}
    return entry, comb


def _reference_key(s: dict) -> str:
    return system_key(s["model"], "f16", None, None, s["runtime"], s["policy"])


def _score_against_references(systems: list[dict], combined: dict, order: list[str], n_boot: int) -> None:
    """Per data set blocks (scores, failures, damage against the F16 of the same model, runtime and policy,
    recomputed from the hypotheses) and the pooled damage of every system, in place."""
    for s in systems:
        comb = combined.get(s["key"])
        if comb is None:
            continue
        ref = combined.get(_reference_key(s))
        if not s["reference"] and ref is not None:
            shared = [d.name for d in comb.datasets if ref.dataset(d.name) is not None]
            comb.datasets = [comb.dataset(n) for n in shared]
            comb.attach_reference(_combined(ref.system, [ref.dataset(n) for n in shared]), n_boot=n_boot)
        per, pooled = comb.damage_blocks()
        for d in comb.datasets:
            dd = d.to_dict()
            block = {"scores": dd["scores"], "n_utts": dd["n_utts"], "decode_s": dd["decode_seconds"],
                     "audio_s": dd["audio_seconds"], "cache_hits": dd["cache_hits"], "failures": dd["failures"]}
            block.update(per.get(d.name, {}))
            s["datasets"][d.name] = block
            s["hyps"][d.name] = list(d.hyps)
        s["pooled"] = pooled if len(comb.datasets) == len(order) else None


def _comparisons(systems: list[dict], combined: dict, baselines: list[str], n_boot: int) -> list[dict]:
    """Paired comparisons of every system with each baseline of the same model, type, runtime and policy (and
    seed, when both have one): damage and rare damage (pooled over sets) and WER / rare-WER (mean over sets)."""
    from tarq.eval.damage import compare_damage
    from tarq.eval.results import compare_results

    out = []
    for s in systems:
        if s["reference"] or s["key"] not in combined or _reference_key(s) not in combined:
            continue
        for base in baselines:
            if base == s["method"] or (s["method"] in baselines
                                       and baselines.index(s["method"]) > baselines.index(base)):
                continue          # each pair of baselines once: the one listed first is A
            b = next((x for x in systems if x["method"] == base and x["model"] == s["model"]
                      and x["type"] == s["type"] and x["runtime"] == s["runtime"] and x["policy"] == s["policy"]
                      and (x["seed"] is None or s["seed"] is None or x["seed"] == s["seed"])), None)
            if b is None or b["key"] not in combined:
                continue
            A, B, R = combined[s["key"]], combined[b["key"]], combined[_reference_key(s)]
            rows = [{"dataset": n, "metric": r["metric"], "diff": r["diff"], "ci": r["ci"],
                     "resolvable": r["resolvable"], "a": r["a"], "b": r["b"]}
                    for n, r in compare_damage(A, B, R, n_boot=n_boot)]
            for n, r in compare_results(A, B, n_boot=n_boot):
                half = None if r.lo != r.lo or r.hi != r.hi else (r.hi - r.lo) / 2
                rows.append({"dataset": n, "metric": r.metric, "diff": r.diff, "ci": [r.lo, r.hi],
                             "resolvable": half, "a": r.a, "b": r.b})
            out.append({"a": s["key"], "b": b["key"], "method": s["method"], "baseline": base, "model": s["model"],
                        "type": s["type"], "runtime": s["runtime"], "policy": s["policy"], "rows": rows})
    return out


def _data_summary(plan, combined: dict) -> dict:
    out = {}
    for d in plan.spec.data:
        scored = next((r.dataset(d.name) for r in combined.values() if r.dataset(d.name) is not None), None)
        sc = scored.scores if scored is not None else None
        out[d.name] = {"path": d.path, "n_utts": len(plan.utterances[d.name]), "n_utts_in_set": plan.totals[d.name],
                       "limit": d.limit, "subset_seed": d.subset_seed,
                       "fingerprint": next(c.data_fingerprint for c in plan.references if c.data.name == d.name),
                       "n_words": sc.n_words if sc else None, "n_rare": sc.n_rare if sc else None,
                       "n_numeral": sc.n_numeral if sc else None}
    return out


def _cell_record(plan, g: dict, order: list[str]) -> dict:
    """Build cost of a system's artifact, from its cells' records (the same artifact for every data set)."""
    import json

    for name in order:
        cid = g["cells"].get(name)
        if cid is None:
            continue
        path = plan.out / "cells" / f"{cid}.json"
        try:
            built = json.loads(path.read_text(encoding="utf-8")).get("cell", {}).get("built", {})
        except (OSError, ValueError):
            continue
        return {k: built.get(k) for k in ("bytes", "quantize_s", "export_s", "quantize_timing", "quantize_threads",
                                          "quantize_device")}
    return {}


def write_results(plan, out: Path) -> Path:
    from tarq._atomic import atomic_write

    from .frontier import frontier_rows, plot_frontier, render_frontier, spans_types
    from .render import plot, render_markdown
    from .tasks import _write_json

    doc = collect(plan)
    frontier = spans_types(doc)
    if frontier:
        doc["frontier"] = frontier_rows(doc)
    path = Path(out) / "results.json"
    _write_json(path, doc)
    md = render_markdown(doc) + ("\n\n" + render_frontier(doc) if frontier else "")
    with atomic_write(Path(out) / "results.md", "w", encoding="utf-8") as f:
        f.write(md + "\n")
    # the folder's results.* describe this run only: a frontier plot left by an earlier grid over several types
    # would otherwise be published beside a one-type run's results as if it were its own
    (Path(out) / "frontier.png").unlink(missing_ok=True)
    try:
        plot(doc, Path(out) / "results.png")
        if frontier:
            plot_frontier(doc, Path(out) / "frontier.png")
    except ModuleNotFoundError:
        log.info("matplotlib not installed: no results.png (pip install 'tarq[bench]')")
    return path
