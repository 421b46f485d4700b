"""Run a grid: plan the cells, skip those whose result files exist, submit the rest as Ray tasks with
dependencies (quantize -> export -> decode shards -> score; a system's score waits for its reference cell),
then write the one results table (``results.json``, ``results.md``, ``results.png``).

Local Ray by default (``ray.init()`` on this machine); ``address`` joins an existing cluster (every node needs
tarq installed and the data and output paths mounted at the same place). ``executor="serial"`` runs the same
tasks inline, in dependency order, without Ray (debugging, or a machine without the ``grid`` extra).

Output folder layout::

    OUT/spec.json                 the resolved spec of the last run
    OUT/artifacts/<id>/           quantized/ (tarq quantize), model.bin (tarq export), build.json (timings)
    OUT/cells/<cell id>.json      one system on one data set: a tarq eval result (per-utterance hypotheses,
                                  scores, damage against the reference cell, failures) + the cell's record
    OUT/results.json|.md|.png     the results table of every planned cell
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from .spec import PSEUDO_METHODS, Artifact, Cell, GridSpec, data_fingerprint, select_with_total
from . import tasks

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- executors

class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class _Done:
    def __init__(self, value):
        self.value = value


class SerialExecutor:
    """Runs each task when it is submitted (submission order is dependency order). A failed task's dependants
    fail with it; independent tasks still run."""
    name = "serial"

    def submit(self, fn, *args, num_cpus: float = 1, num_gpus: float = 0):
        failed = next((a for a in args if isinstance(a, _Failed)), None)
        if failed is not None:
            return failed
        try:
            return _Done(fn(*[a.value if isinstance(a, _Done) else a for a in args]))
        except Exception as e:   # noqa: BLE001 - reported per cell by the engine
            return _Failed(e)

    def results(self, handles):
        for h in handles:
            yield h, ((None, h.error) if isinstance(h, _Failed) else (h.value, None))

    def shutdown(self):
        pass


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, verbose: bool = False, num_cpus: int | None = None):
        try:
            import ray
        except ModuleNotFoundError:
            raise ValueError("tarq grid runs on Ray: pip install 'tarq[grid]' (or use --executor serial)") from None
        self.ray = ray
        kw = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING,
              "configure_logging": True}
        if address:
            kw["address"] = address
        else:
            kw.update(include_dashboard=False, object_store_memory=256 * 2**20)
            if num_cpus:
                kw["num_cpus"] = num_cpus
        ray.init(**kw)
        self._remote: dict = {}
        # the most CPUs one node has: a task asking for more would wait forever (e.g. threads=2 on a 1-CPU box)
        self.max_cpus = max((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")),
                            default=1) or 1

    def submit(self, fn, *args, num_cpus: float = 1, num_gpus: float = 0):
        num_cpus = min(num_cpus, self.max_cpus)
        key = (fn, num_cpus, num_gpus)
        if key not in self._remote:
            self._remote[key] = self.ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(fn)
        return self._remote[key].remote(*args)

    def results(self, handles):
        pending = list(handles)
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            for h in done:
                try:
                    yield h, (self.ray.get(h), None)
                except Exception as e:   # noqa: BLE001 - a task error, reported per cell
                    yield h, (None, e)

    def shutdown(self):
        self.ray.shutdown()


# ----------------------------------------------------------------------------------------------- planning

def artifact_dict(a: Artifact) -> dict:
    return {"id": a.id, "model": a.model, "type": a.type, "seed": a.seed, "calib": a.calib, "n_calib": a.n_calib,
            "method": {"label": a.method.label, "method": a.method.method, "argv": a.method.argv(),
                       "options": dict(a.method.options)}}


def cell_label(c: Cell) -> str:
    a = c.artifact
    if a.is_reference:
        return f"F16 {a.model}"
    return " ".join(x for x in (a.method.label, a.type, a.model, None if a.seed is None else f"seed {a.seed}") if x)


def cell_dict(c: Cell) -> dict:
    return {"id": c.id, "label": cell_label(c), "artifact": artifact_dict(c.artifact), "runtime": c.runtime,
            "policy": c.policy, "data": asdict(c.data), "data_fingerprint": c.data_fingerprint}


class Plan:
    def __init__(self, spec: GridSpec, out: Path):
        self.spec, self.out = spec, out
        self.utterances, self.totals = {}, {}
        fps = {}
        for d in spec.data:
            self.utterances[d.name], self.totals[d.name] = select_with_total(d)
            if not self.utterances[d.name]:
                raise ValueError(f"{d.path}: no utterances")
            fps[d.name] = data_fingerprint(self.utterances[d.name])
        self.references, self.cells = spec.cells(fps)
        self.reference_of = {(c.artifact.model, c.runtime, c.policy, c.data.name): c for c in self.references}

    def cell_path(self, c: Cell) -> Path:
        return self.out / "cells" / f"{c.id}.json"

    def todo(self, rebuild: bool = False) -> list[Cell]:
        return [c for c in self.references + self.cells if rebuild or not self.cell_path(c).is_file()]


# ----------------------------------------------------------------------------------------------- running

def run_grid(spec: GridSpec, out: str | Path, *, address: str | None = None, executor: str = "ray",
             rebuild: bool = False, use_cache: bool = True, cache_dir: str | None = None, verbose: bool = False,
             dry_run: bool = False, say: Callable[[str], None] = print, num_cpus: int | None = None) -> dict:
    """Run what is missing of ``spec`` under ``out`` and write the results table. Returns a summary:
    {"cells", "done_before", "ran", "failed": [(cell id, error)], "results": path, "wall_s"}."""
    from .results import write_results

    t0 = time.perf_counter()
    spec.validate()
    out = Path(out)
    plan = Plan(spec, out)
    todo = plan.todo(rebuild)
    n_all = len(plan.references) + len(plan.cells)
    say(f"grid {spec.name}: {n_all} cells ({len(plan.references)} reference), {n_all - len(todo)} done before, "
        f"{len(todo)} to run")
    if dry_run:
        for c in todo:
            say(f"  would run {c.id}")
        return {"cells": n_all, "done_before": n_all - len(todo), "ran": 0, "failed": [], "results": None,
                "wall_s": time.perf_counter() - t0}
    failed: list[tuple[str, str]] = []
    if todo:
        tasks._write_json(out / "spec.json", spec.to_dict())
        ex = SerialExecutor() if executor == "serial" else RayExecutor(address, verbose, num_cpus)
        try:
            failed = _submit_and_wait(plan, todo, ex, use_cache, cache_dir, say)
        finally:
            ex.shutdown()
    results = write_results(plan, out)
    wall = time.perf_counter() - t0
    say(f"grid {spec.name}: {len(todo) - len(failed)} cells run, {len(failed)} failed, in {wall:.0f} s; "
        f"results in {results}")
    return {"cells": n_all, "done_before": n_all - len(todo), "ran": len(todo) - len(failed), "failed": failed,
            "results": str(results), "wall_s": wall}


def _submit_and_wait(plan: Plan, todo: list[Cell], ex, use_cache: bool, cache_dir: str | None, say) -> list:
    spec, root = plan.spec, str(plan.out)
    device = "cuda" if spec.quantize_gpus > 0 else "cpu"
    quant, built, scored = {}, {}, {}

    def build(c: Cell):
        a = c.artifact
        kind = "torch" if c.runtime == "torch" else "bin"
        if (a.id, kind) not in built:
            q = None
            # an artifact quantized by an earlier run is not queued again: its task would only find the folder
            # and return, but while it waits for `threads` free CPUs Ray holds the 1-CPU decode shards behind it
            # (measured on a 2-CPU machine: `ray status` 1.0/2.0 CPU in use, 7 runnable decode shards pending)
            if a.method.method not in PSEUDO_METHODS and not tasks.is_quantized(root, a.id):
                if a.id not in quant:
                    quant[a.id] = ex.submit(tasks.quantize_task, artifact_dict(a), root, spec.threads, device,
                                            num_cpus=spec.threads, num_gpus=spec.quantize_gpus)
                q = quant[a.id]
            built[(a.id, kind)] = ex.submit(tasks.export_task, artifact_dict(a), root, c.runtime, q, num_cpus=1)
        return built[(a.id, kind)]

    # references first: system cells depend on their reference cell's file
    ordered = sorted(todo, key=lambda c: not c.artifact.is_reference)
    handles = {}
    for c in ordered:
        b = build(c)
        utts = plan.utterances[c.data.name]
        shards = [ex.submit(tasks.decode_task, c.runtime, c.policy, b, utts[i:i + spec.shard_size],
                            spec.decode_threads, cache_dir, use_cache, num_cpus=spec.decode_threads)
                  for i in range(0, len(utts), spec.shard_size)]
        ref_cell = None if c.artifact.is_reference else plan.reference_of[
            (c.artifact.model, c.runtime, c.policy, c.data.name)]
        # the reference cell's score handle (when it runs now) makes this score wait for its file
        dep = scored.get(ref_cell.id) if ref_cell is not None else None
        ref_path = None if ref_cell is None else str(plan.cell_path(ref_cell))
        h = ex.submit(_score_after, dep, cell_dict(c), b, utts, ref_path, str(plan.cell_path(c)), spec.bootstrap,
                      *shards, num_cpus=1)
        scored[c.id] = h
        handles[h] = c
    failed = []
    n_done = 0
    for h, (value, error) in ex.results(list(handles)):
        c = handles[h]
        n_done += 1
        if error is not None:
            msg = _error_line(error)
            failed.append((c.id, msg))
            say(f"[{n_done}/{len(handles)}] FAILED {c.id}: {msg}")
        else:
            dmg = "" if value["net_rate"] is None else f", damage {100 * value['net_rate']:+.2f} %"
            say(f"[{n_done}/{len(handles)}] {c.id}: WER {100 * value['wer']:.2f} %{dmg} "
                f"({value['cache_hits']}/{value['n_utts']} from the decode cache)")
    return failed


def _score_after(_reference_done, cell, built, utts, ref_path, out_path, bootstrap, *shards):
    """score_task once the reference cell is written (its handle is the first argument)."""
    return tasks.score_task(cell, built, utts, ref_path, out_path, bootstrap, *shards)


def _error_line(error: BaseException) -> str:
    """The innermost message of a (possibly Ray-wrapped) task error, on one line."""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return (text[-1] if text else type(cause).__name__)[:300]
