"""Build-once artifacts for the benchmarks: quantized directories and whisper.cpp ``.bin`` files.

Everything is produced by the ``tarq`` command in a child process (so its wall time and peak RSS are measured
cleanly) and cached under ``benchmarks/.cache`` keyed by model + method + configuration. A sidecar
``<artifact>.build.json`` records the command, wall time and peak RSS of the build, so results can report the
cost of an artifact even when a re-run takes it from the cache. ``rebuild=True`` ignores the cache.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from _common import (CACHE_DIR, REPO_ROOT, bench_env, check_child, loadavg, read_json, run_measured, tarq_cli,
                     utc_now, write_json)

def baseline_kinds() -> tuple[str, ...]:
    """Every kind ``baseline_bin`` builds: F16 and ggml's round-to-nearest of every quantized ggml type (byte-exact
    to libggml, so the legacy and K types whisper.cpp's ``quantize`` offers are clones of it)."""
    from _common import ensure_tarq_importable

    ensure_tarq_importable()
    from tarq.ggml import QUANT_TYPES

    return ("f16", *QUANT_TYPES)


@dataclass
class Artifact:
    path: Path
    build: dict          # {"cmd", "wall_s", "peak_rss_mb", "created", "cached"}


def config_key(**config) -> str:
    """Short stable hash of a configuration (the readable parts go into the name separately)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:8]


# Sources whose change can change an artifact's bytes. Their hash is stored with each artifact; a cache hit built
# from different sources is used (so a re-run stays cheap) but flagged ``stale_code`` in the build record and the
# results, and a warning is printed: re-run with --rebuild before publishing numbers.
_ARTIFACT_SOURCES = ("calib", "methods", "kernels", "models", "export", "data", "ggml", "qmodel.py")
_NOT_ARTIFACT_SOURCES = ("integrity.py",)   # export/integrity.py checksums files, it does not change their bytes


def code_fingerprint() -> str:
    h = hashlib.sha1()
    root = REPO_ROOT / "python" / "tarq"
    for entry in _ARTIFACT_SOURCES:
        p = root / entry
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        files += sorted(p.glob("*.so")) if p.is_dir() else []
        for f in files:
            if f.is_file() and f.name not in _NOT_ARTIFACT_SOURCES:
                h.update(str(f.relative_to(root)).encode())
                h.update(f.read_bytes())
    for so in sorted(root.glob("_C*.so")):
        h.update(so.read_bytes())
    return h.hexdigest()[:12]


def _rel(arg: str) -> str:
    """Command arguments relative to the repository root, so recorded commands are machine-independent."""
    prefix = str(REPO_ROOT) + "/"
    return arg[len(prefix):] if arg.startswith(prefix) else arg


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".build.json")


def _cached(path: Path, rebuild: bool, rebuild_if_stale: bool = False) -> Artifact | None:
    side = _sidecar(path)
    if rebuild or not path.exists() or not side.exists():
        return None
    build = read_json(side)
    build["cached"] = True
    now = code_fingerprint()
    build["stale_code"] = build.get("code") != now
    if build["stale_code"] and rebuild_if_stale:
        return None
    if build["stale_code"]:
        print(f"warning: {path.name} was built from other tarq sources (code {build.get('code')} vs now "
              f"{now}); pass --rebuild to rebuild it", file=sys.stderr)
    return Artifact(path, build)


def _build(cmd: list[str], path: Path, what: str, env_extra: dict | None = None, threads: int | None = None,
           timeout: float | None = None) -> Artifact:
    """Run ``cmd`` (which must write ``path``), then record the sidecar. A failed build leaves no artifact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    load_before = loadavg()
    res = run_measured(cmd, env=bench_env(threads=threads, **(env_extra or {})), timeout=timeout)
    check_child(res, what)
    if not path.exists():
        raise RuntimeError(f"{what}: command succeeded but did not create {path}")
    build = {"cmd": [_rel(c) for c in cmd[2:]], "env": env_extra or {}, "wall_s": round(res.wall_s, 2),
             "peak_rss_mb": round(res.peak_rss_mb, 1), "created": utc_now(), "code": code_fingerprint(),
             "loadavg_before": load_before, "loadavg_after": loadavg(),
             "cached": False, "stale_code": False}
    write_json(_sidecar(path), build)
    return Artifact(path, build)


def baseline_bin(model: str, kind: str, rebuild: bool = False, cache: Path = CACHE_DIR) -> Artifact:
    """whisper.cpp ``.bin`` of ``model`` in F16, or quantized by our clone of whisper.cpp's ``quantize`` (RTN)."""
    kinds = baseline_kinds()
    if kind not in kinds:
        raise ValueError(f"unknown baseline kind {kind!r}; choose from {kinds}")
    path = cache / "bins" / f"{model}-{kind}{'' if kind == 'f16' else '-rtn'}.bin"
    hit = _cached(path, rebuild, rebuild_if_stale=True)     # cheap (seconds): never reuse a stale one
    if hit:
        return hit
    flag = ["--f16"] if kind == "f16" else ["--rtn", kind]
    return _build(tarq_cli("export", model, *flag, "--out", str(path)), path, f"export {model} {kind}")


def quantized_dir(model: str, method: str, fmt: str, calib: Path, n_calib: int | None, threads: int = 2,
                  extra: list[str] | None = None, rebuild: bool = False, cache: Path = CACHE_DIR,
                  env_extra: dict | None = None, timeout: float | None = None) -> Artifact:
    """``tarq quantize`` output directory (cached unless rebuild)."""
    extra = list(extra or [])
    key = config_key(model=model, method=method, fmt=fmt, calib=str(calib), n_calib=n_calib, extra=extra)
    calib_name = Path(calib).name if method != "rtn" else "none"
    path = cache / "quant" / f"{model}-{method}-{fmt}-{calib_name}-n{n_calib or 'all'}-{key}"
    hit = _cached(path, rebuild)
    if hit:
        return hit
    cmd = tarq_cli("quantize", model, "--method", method, "--format", fmt, "--out", str(path),
                   "--threads", str(threads))
    if method != "rtn":
        cmd += ["--calib", str(calib)]
        if n_calib:
            cmd += ["--n-calib", str(n_calib)]
    return _build(cmd + extra, path, f"quantize {model} {method}", env_extra=env_extra, threads=threads,
                  timeout=timeout)


def exported_bin(qdir: Artifact, rebuild: bool = False) -> Artifact:
    """whisper.cpp ``.bin`` written from a quantized directory (codes and scales verbatim). Re-exported when the
    export code changed (seconds); stale if its directory is."""
    path = qdir.path.with_name(qdir.path.name + ".bin")
    art = _cached(path, rebuild, rebuild_if_stale=True) or _build(
        tarq_cli("export", str(qdir.path), "--to", "whisper.cpp", "--out", str(path)), path,
        f"export {qdir.path.name}")
    art.build["stale_code"] = bool(art.build.get("stale_code") or qdir.build.get("stale_code"))
    art.build["quantize"] = qdir.build
    return art
