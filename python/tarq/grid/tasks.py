"""The work of a grid, as plain functions of JSON-able arguments: they run as Ray tasks (``engine.py``) or inline.

quantize (``tarq quantize``) -> export (``tarq export``) -> decode shards (decode cache first) -> score (one cell
file, damage against the reference cell). Each step writes its output atomically, so a killed grid leaves only
complete files and a rerun picks up from them. Quantize and export go through the ``tarq`` CLI in-process, so
every type, method and option the CLI accepts works in a grid unchanged.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _tarq(argv: list[str], what: str) -> float:
    """Run a tarq CLI command in this process; raise with its error line on failure; return its wall time."""
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")
    from tarq.cli.main import main

    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([str(a) for a in argv])
    if rc:
        tail = err.getvalue().strip().splitlines()[-1:] or ["(no message)"]
        raise RuntimeError(f"{what}: `tarq {' '.join(map(str, argv))}` failed: {tail[0]}")
    return time.perf_counter() - t0


def artifact_paths(root: str, artifact_id: str) -> dict[str, str]:
    d = Path(root) / "artifacts" / artifact_id
    return {"dir": str(d), "qdir": str(d / "quantized"), "bin": str(d / "model.bin"), "build": str(d / "build.json")}


def is_quantized(root: str, artifact_id: str) -> bool:
    """Whether an earlier run already wrote this artifact's quantized folder (the grid does not queue it again)."""
    from tarq.qmodel import is_quantized_dir

    return is_quantized_dir(artifact_paths(root, artifact_id)["qdir"])


def _read_build(paths: dict) -> dict:
    p = Path(paths["build"])
    with contextlib.suppress(OSError, ValueError):
        return json.loads(p.read_text())
    return {}


def quantize_task(artifact: dict, root: str, threads: int, device: str = "cpu") -> dict:
    """``tarq quantize`` of a registry method into the artifact's folder (skipped when it exists); records the
    quantization wall time and the run's own timing split (report.json) in the artifact's build.json."""
    paths = artifact_paths(root, artifact["id"])
    if not is_quantized(root, artifact["id"]):
        m = artifact["method"]
        argv = ["quantize", artifact["model"], "--method", m["method"], "--format", artifact["type"],
                "--out", paths["qdir"], "--threads", threads, "--no-progress"]
        if artifact["calib"]:
            calibs = [artifact["calib"]] if isinstance(artifact["calib"], str) else artifact["calib"]
            for calib in calibs:                     # several: mixed, as tarq quantize --calib A --calib B does
                argv += ["--calib", calib]
            argv += ["--seed", artifact["seed"] or 0]
            if artifact["n_calib"]:
                argv += ["--n-calib", artifact["n_calib"]]
        if device != "cpu":
            argv += ["--device", device]
        wall = _tarq(argv + list(m["argv"]), f"quantize {artifact['id']}")
        timing = None
        with contextlib.suppress(OSError, ValueError):
            timing = json.loads((Path(paths["qdir"]) / "report.json").read_text()).get("timing_s")
        build = _read_build(paths)
        build.update(quantize_s=round(wall, 2), quantize_timing=timing, quantize_threads=threads,
                     quantize_device=device, quantized=_now())
        _write_json(Path(paths["build"]), build)
    return _read_build(paths)


def export_task(artifact: dict, root: str, runtime: str, quant: dict | None = None) -> dict:
    """The file a runtime loads: an export of the quantized dir, whisper.cpp's quantize, or the F16 reference
    (one .bin serves whisper.cpp and CrispASR). For the torch runtime: the quantized directory, or the float
    model itself. Returns {"model": path or spec, "bytes", and the build record}. ``quant`` (the quantize task's
    result) is only there to make Ray run this after the quantization."""
    paths = artifact_paths(root, artifact["id"])
    method = artifact["method"]["method"]
    if runtime == "torch":
        model = artifact["model"] if method == "f16" else paths["qdir"]
        return {"model": model, "bytes": _size(model), **_read_build(paths)}
    if not Path(paths["bin"]).is_file():
        if method == "f16":
            argv = ["export", artifact["model"], "--f16", "--out", paths["bin"]]
        elif method == "ggml":
            argv = ["export", artifact["model"], "--rtn", artifact["type"], "--out", paths["bin"],
                    *artifact["method"]["argv"]]
        else:
            argv = ["export", paths["qdir"], "--to", "whisper.cpp", "--out", paths["bin"]]
        wall = round(_tarq(argv, f"export {artifact['id']}"), 2)
        build = _read_build(paths)
        build.update(export_s=wall, exported=_now())
        if method == "ggml":                      # whisper.cpp's quantize is the whole build
            build["quantize_s"] = wall
        _write_json(Path(paths["build"]), build)
    return {"model": paths["bin"], "bytes": Path(paths["bin"]).stat().st_size, **_read_build(paths)}


def _size(path: str) -> int | None:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*.safetensors"))
    return None


def make_backend(runtime: str, model: str, policy: str, threads: int):
    """A decoding backend, checked to decode with ``policy`` (an unsupported policy is an error, not ignored)."""
    from tarq.eval import get_backend
    from tarq.eval.results import policy_of

    if runtime == "torch":
        if policy != "greedy":
            raise ValueError(f"the torch backend decodes greedily, not with policy {policy!r}")
        backend = get_backend("torch", model, threads=threads, batch_size=8)
    else:
        backend = get_backend(runtime, model, threads=threads, policy=policy)
    got = policy_of(getattr(backend, "description", {}))
    if got != policy:
        raise ValueError(f"the {runtime} backend decodes with policy {got!r}, not {policy!r} "
                         "(this tarq's backend does not implement that policy)")
    return backend


def decode_task(runtime: str, policy: str, built: dict, utterances: list, threads: int,
                cache_dir: str | None, use_cache: bool = True) -> dict:
    """Hypotheses of one shard of utterances (cache misses only are decoded)."""
    from tarq.eval.cache import DecodeCache, decode_with_cache

    backend = make_backend(runtime, built["model"], policy, threads)
    cache = DecodeCache(cache_dir) if use_cache else None
    t0 = time.perf_counter()
    hyps, secs, audio_secs, hits = decode_with_cache(backend, utterances, cache, progress=False)
    return {"ids": [u.id for u in utterances], "hyps": hyps, "seconds": secs, "audio_seconds": audio_secs,
            "cache_hits": hits, "wall_s": time.perf_counter() - t0, "system": dict(backend.description)}


def score_task(cell: dict, built: dict, utterances: list, reference_path: str | None, out_path: str,
               bootstrap: int, *shards: dict) -> dict:
    """Assemble a cell's shards into a tarq eval result, score it (damage against the reference cell) and
    write the cell file atomically. Returns a small summary."""
    from tarq.eval import DatasetResult, EvalResult, load_result

    by_id = {}
    for s in shards:
        for i, uid in enumerate(s["ids"]):
            by_id[uid] = (s["hyps"][i], s["seconds"][i], s["audio_seconds"][i])
    missing = [u.id for u in utterances if u.id not in by_id]
    if missing:
        raise RuntimeError(f"cell {cell['id']}: {len(missing)} utterances were not decoded (e.g. {missing[0]})")
    data = cell["data"]
    ds = DatasetResult(name=data["name"], path=data["path"], ids=[u.id for u in utterances],
                       refs=[u.text for u in utterances], hyps=[by_id[u.id][0] for u in utterances],
                       durations=[by_id[u.id][2] for u in utterances], seconds=[by_id[u.id][1] for u in utterances],
                       cache_hits=sum(s["cache_hits"] for s in shards))
    system = dict(shards[0]["system"]) if shards else {}
    a = cell["artifact"]
    system.update(label=cell["label"], method=a["method"]["label"], type=a["type"], seed=a["seed"],
                  model_name=a["model"], policy=cell["policy"])
    result = EvalResult(system=system, datasets=[ds], created=_now())
    if reference_path is not None:
        result.attach_reference(load_result(reference_path), path=reference_path, n_boot=bootstrap)
    doc = result.to_dict()
    doc["cell"] = {**cell, "built": {k: v for k, v in built.items() if k != "model"},
                   "decode_wall_s": round(sum(s["wall_s"] for s in shards), 2), "tarq": _code_version()}
    _write_json(Path(out_path), doc)
    d = doc["datasets"][0]
    return {"id": cell["id"], "wer": d["scores"]["wer"], "net_rate": (d.get("damage") or {}).get("net_rate"),
            "cache_hits": d["cache_hits"], "n_utts": d["n_utts"]}


def _code_version() -> dict:
    import subprocess

    import tarq

    out = {"version": getattr(tarq, "__version__", None)}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        root = Path(tarq.__file__).resolve().parents[2]
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if r.returncode == 0:
            out["git_commit"] = r.stdout.strip()
    return out


def _write_json(path: Path, obj) -> None:
    from tarq._atomic import atomic_write

    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False, default=str)
        f.write("\n")
