"""Grid specifications: models x methods x types x data sets x seeds (x runtimes x policies), expanded into
build artifacts and evaluation cells with stable ids.

A spec is a TOML or JSON file (docs/evaluation.md, "The grid") and/or ``tarq grid`` flags::

    models = ["tiny.en"]
    methods = ["ggml", "rtn", "gptq", {name = "tarq-c2", method = "tarq", options = {cost-ratio = 2.0}},
               {name = "gptq-mix", method = "gptq", calib = ["../shared/data/austen-tts-calib", "runs/splits/a-calib"]}]
    types = ["q4_0", "q8_0"]           # any ggml type name tarq quantize / export accept
    seeds = [0]                        # calibration subset seeds (methods without calibration run once)
    calib = "../shared/data/austen-tts-calib"
    n_calib = 32
    runtimes = ["whisper.cpp"]         # whisper.cpp | crispasr (both on the exported .bin) | torch (fake-quant)
    policies = ["greedy"]              # decoding policy of the runtime backends
    baselines = ["gptq", "ggml"]       # every system is compared with these (paired damage difference)
    [[data]]
    path = "../shared/data/asterisk-prompts"
    limit = 40                         # optional seeded subset (sorted ids, random.Random(subset_seed).sample)

Method names are registry names (``tarq quantize --method NAME``, options become its ``--flags``) or ``ggml``:
whisper.cpp's own quantizer, i.e. ``tarq export MODEL --rtn TYPE`` (options: e.g. ``imatrix = "CALIB"``). A
calibrated method's ``calib`` (one path, or a list of paths mixed as ``tarq quantize --calib A --calib B`` mixes
them) replaces the grid's ``calib`` for that method, so one grid compares calibration domains and mixes. The
reference system ``f16`` (F16 export; the float model for torch) is added per model, runtime and policy: every
quantized system is scored as damage against it.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

RUNTIMES = ("whisper.cpp", "crispasr", "torch")
PSEUDO_METHODS = ("ggml", "f16")
REFERENCE_LABEL = "f16"


def short_hash(obj: Any, n: int = 10) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


@dataclass(frozen=True)
class MethodSpec:
    label: str                       # unique name in the grid (tables, ids)
    method: str                      # registry name, "ggml" or "f16"
    options: tuple = ()              # ((flag, value), ...) passed as --flag value

    def argv(self) -> list[str]:
        out: list[str] = []
        for flag, value in self.options:
            name = "--" + str(flag).lstrip("-").replace("_", "-")
            if value is True:
                out.append(name)
            elif value is not False and value is not None:
                out += [name, str(value)]
        return out

    @property
    def calibrated(self) -> bool:
        if self.method in PSEUDO_METHODS:
            return False
        from tarq.methods import get_method

        return bool(get_method(self.method).needs_stats)


@dataclass(frozen=True)
class DataSpec:
    path: str
    name: str
    limit: int | None = None
    subset_seed: int = 0


@dataclass(frozen=True)
class Artifact:
    """One model file to build: quantized directory (+ export), whisper.cpp's quantize, or the F16 reference."""
    model: str
    method: MethodSpec
    type: str | None                 # ggml type name; None for the F16 reference
    seed: int | None                 # calibration seed; None when the method has no calibration
    calib: str | tuple[str, ...] | None   # one path, or several mixed; a single path stays a string so ids of
    #                                       specs written before mixing existed do not change
    n_calib: int | None

    @property
    def id(self) -> str:
        readable = "-".join(x for x in (self.model, self.method.label, self.type,
                                        None if self.seed is None else f"s{self.seed}") if x)
        return f"{readable}-{short_hash(asdict(self))}"

    @property
    def is_reference(self) -> bool:
        return self.method.method == "f16"


@dataclass(frozen=True)
class Cell:
    """One system decoded and scored on one data set."""
    artifact: Artifact
    runtime: str
    policy: str
    data: DataSpec
    data_fingerprint: str            # sha256 of the selected (id, transcript, audio file) triples

    @property
    def id(self) -> str:
        a = self.artifact
        readable = "-".join(x for x in (a.model, a.method.label, a.type, None if a.seed is None else f"s{a.seed}",
                                        self.runtime, self.policy, self.data.name) if x)
        key = {"artifact": asdict(a), "runtime": self.runtime, "policy": self.policy, "data": asdict(self.data),
               "fingerprint": self.data_fingerprint}
        return f"{readable}-{short_hash(key)}"

    @property
    def system_key(self) -> tuple:
        a = self.artifact
        return (a.model, a.method.label, a.type, a.seed, self.runtime, self.policy)


@dataclass
class GridSpec:
    models: list[str]
    methods: list[MethodSpec]
    types: list[str]
    data: list[DataSpec]
    seeds: list[int] = field(default_factory=lambda: [0])
    calib: str | None = None
    n_calib: int | None = None
    runtimes: list[str] = field(default_factory=lambda: ["whisper.cpp"])
    policies: list[str] = field(default_factory=lambda: ["greedy"])
    baselines: list[str] = field(default_factory=list)
    method_calib: dict[str, str | tuple[str, ...]] = field(default_factory=dict)   # method label -> its own calib
    threads: int = 2                 # quantize threads (and CPUs a quantize task asks Ray for)
    decode_threads: int = 1          # threads per decode task (CPUs it asks Ray for)
    shard_size: int = 64             # utterances per decode task
    quantize_gpus: float = 0.0       # GPUs a quantize task asks Ray for (>0 also passes --device cuda)
    bootstrap: int = 1000
    name: str = "grid"

    def validate(self) -> "GridSpec":
        def need(cond, msg):
            if not cond:
                raise ValueError(f"grid spec: {msg}")
        need(self.models, "no models")
        need(self.methods, "no methods")
        need(self.types, "no types")
        need(self.data, "no data sets")
        need(self.seeds, "no seeds")
        labels = [m.label for m in self.methods]
        need(len(set(labels)) == len(labels), f"method labels must be unique: {labels}")
        need(REFERENCE_LABEL not in labels, "the f16 reference system is added by the grid; do not list it")
        names = [d.name for d in self.data]
        need(len(set(names)) == len(names), f"data set names must be unique: {names}")
        bad = [r for r in self.runtimes if r not in RUNTIMES]
        need(not bad, f"unknown runtime(s) {bad}; choose from {', '.join(RUNTIMES)}")
        need(all(b in labels for b in self.baselines), f"baselines {self.baselines} must be method labels {labels}")
        if "torch" in self.runtimes:
            need(all(p == "greedy" for p in self.policies), "the torch runtime decodes greedily only")
            need(not any(m.method == "ggml" for m in self.methods),
                 "the ggml baseline exists only as a .bin for the runtimes; use method rtn for the torch runtime")
        unknown = sorted(set(self.method_calib) - set(labels))
        need(not unknown, f"calib given for unknown method label(s) {unknown}")
        for m in self.methods:
            if m.method not in PSEUDO_METHODS:
                from tarq.methods import available_methods
                need(m.method in available_methods(),
                     f"unknown method {m.method!r}; choose from {', '.join(available_methods() + ['ggml'])}")
                if m.calibrated:
                    need(self.calib_of(m), f"method {m.label} needs calibration data: set calib")
            if m.label in self.method_calib:
                need(m.calibrated, f"method {m.label} uses no calibration data; its calib would be ignored")
        need(self.threads >= 1 and self.decode_threads >= 1 and self.shard_size >= 1, "threads/shard_size >= 1")
        return self

    def calib_of(self, m: MethodSpec) -> str | tuple[str, ...] | None:
        """The method's own calib when it has one, else the grid's."""
        return self.method_calib.get(m.label) or self.calib

    # ------------------------------------------------------------------------------------------- expansion

    def artifacts(self) -> list[Artifact]:
        out, seen = [], set()
        for model in self.models:
            for m in self.methods:
                for t in self.types:
                    for seed in (self.seeds if m.calibrated else [None]):
                        cal = m.calibrated
                        a = Artifact(model, m, t, seed, self.calib_of(m) if cal else None,
                                     self.n_calib if cal else None)
                        if a not in seen:
                            seen.add(a)
                            out.append(a)
        return out

    def reference_artifact(self, model: str) -> Artifact:
        return Artifact(model, MethodSpec(REFERENCE_LABEL, "f16"), None, None, None, None)

    def cells(self, fingerprints: dict[str, str]) -> tuple[list[Cell], list[Cell]]:
        """(reference cells, system cells). ``fingerprints``: data set name -> data fingerprint."""
        refs, cells = [], []
        for runtime in self.runtimes:
            for policy in self.policies:
                for d in self.data:
                    fp = fingerprints[d.name]
                    for model in self.models:
                        refs.append(Cell(self.reference_artifact(model), runtime, policy, d, fp))
                    for a in self.artifacts():
                        cells.append(Cell(a, runtime, policy, d, fp))
        return refs, cells

    def to_dict(self) -> dict:
        d = asdict(self)
        d["methods"] = [{"name": m.label, "method": m.method, "options": dict(m.options),
                         **({"calib": self.method_calib[m.label]} if m.label in self.method_calib else {})}
                        for m in self.methods]
        return d


# ----------------------------------------------------------------------------------------------- parsing

def parse_method(entry) -> MethodSpec:
    if isinstance(entry, str):
        return MethodSpec(entry, entry)
    if isinstance(entry, dict):
        method = entry.get("method") or entry.get("name")
        if not method:
            raise ValueError(f"grid spec: method entry {entry} needs a name or method")
        opts = entry.get("options") or {}
        if not isinstance(opts, dict):
            raise ValueError(f"grid spec: options of method {method} must be a table of flag = value")
        return MethodSpec(str(entry.get("name") or method), str(method), tuple(sorted(opts.items())))
    raise ValueError(f"grid spec: a method is a name or a table, not {entry!r}")


def parse_method_calib(entry, base: Path | None = None) -> str | tuple[str, ...] | None:
    """A method entry's own ``calib``: one path (a string) or several to mix (a tuple), canonical."""
    if not isinstance(entry, dict) or entry.get("calib") is None:
        return None
    raw = entry["calib"]
    paths = [raw] if isinstance(raw, str) else raw
    if not isinstance(paths, (list, tuple)) or not paths or not all(isinstance(x, str) and x for x in paths):
        raise ValueError(f"grid spec: calib of method {entry.get('name') or entry.get('method')} must be a path or "
                         f"a non-empty list of paths, got {raw!r}")
    canon = tuple(canonical_path(x, base) for x in paths)
    return canon[0] if len(canon) == 1 else canon


def parse_data(entry, base: Path | None = None) -> DataSpec:
    """A data entry: "PATH", "PATH:LIMIT", or {path, limit, name, subset_seed}."""
    if isinstance(entry, str):
        path, limit = entry, None
        head, sep, tail = entry.rpartition(":")
        if sep and tail.isdigit() and head:
            path, limit = head, int(tail)
        entry = {"path": path, "limit": limit}
    if not isinstance(entry, dict) or "path" not in entry:
        raise ValueError(f"grid spec: a data entry needs a path: {entry!r}")
    p = Path(canonical_path(str(entry["path"]), base))
    limit = entry.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"grid spec: data limit must be a positive integer, got {limit!r}")
    name = entry.get("name") or (p.parent.name if p.suffix in (".jsonl", ".tsv") else p.name)
    return DataSpec(str(p), str(name), limit, int(entry.get("subset_seed", 0)))


def canonical_path(path: str, base: Path | None = None) -> str:
    """An absolute, lexically normalised path (``~`` expanded; relative to ``base``, else the working directory).

    Artifact and cell ids hash the calibration and data paths, so one file reached by two spellings
    ("grids/../../shared/x" vs "/work/shared/x") must be one string, or the grid rebuilds what it has and decodes
    every utterance again. Lexical (``normpath``), not ``resolve()``: symlinks are kept as the user named them."""
    p = Path(str(path)).expanduser()
    if not p.is_absolute():
        p = (base if base is not None else Path.cwd()) / p
    return os.path.normpath(str(p))


_LIST_KEYS = ("models", "types", "seeds", "runtimes", "policies", "baselines")
_SCALAR_KEYS = ("calib", "n_calib", "threads", "decode_threads", "shard_size", "quantize_gpus", "bootstrap", "name")


def spec_from_dict(d: dict, base: Path | None = None) -> GridSpec:
    unknown = set(d) - set(_LIST_KEYS) - set(_SCALAR_KEYS) - {"methods", "data", "runtime", "policy"}
    if unknown:
        raise ValueError(f"grid spec: unknown key(s) {sorted(unknown)}")
    kw: dict[str, Any] = {}
    for k in _LIST_KEYS:
        if k in d:
            v = d[k]
            kw[k] = list(v) if isinstance(v, (list, tuple)) else [v]
    for single, plural in (("runtime", "runtimes"), ("policy", "policies")):
        if single in d:
            kw[plural] = [d[single]]
    for k in _SCALAR_KEYS:
        if k in d:
            kw[k] = d[k]
    if kw.get("calib"):
        kw["calib"] = canonical_path(kw["calib"], base)
    kw["methods"], kw["method_calib"] = [], {}
    for entry in d.get("methods", []):
        m = parse_method(entry)
        kw["methods"].append(m)
        calib = parse_method_calib(entry, base)
        if calib:
            kw["method_calib"][m.label] = calib
    kw["data"] = [parse_data(x, base) for x in d.get("data", [])]
    kw.setdefault("models", [])
    kw.setdefault("types", [])
    if "seeds" in kw:
        kw["seeds"] = [int(s) for s in kw["seeds"]]
    return GridSpec(**kw)


def load_spec(path: str | Path) -> GridSpec:
    """A spec from a .toml or .json file; relative paths inside are relative to the file's folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: grid spec not found") from None
    try:
        if p.suffix == ".json":
            d = json.loads(text)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:       # Python 3.10
                import tomli as tomllib
            d = tomllib.loads(text)
    except Exception as e:                    # noqa: BLE001 - any parser error is the file's problem
        raise ValueError(f"{p}: not a readable grid spec ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{p}: a grid spec is a table of keys")
    return spec_from_dict(d, base=p.resolve().parent)


def with_overrides(spec: GridSpec, **over) -> GridSpec:
    return replace(spec, **{k: v for k, v in over.items() if v is not None})


# ----------------------------------------------------------------------------------------------- data

def select_utterances(data: DataSpec) -> list:
    """The utterances of a data entry: all of them sorted by id, or a seeded subset of ``limit`` (the same
    (set, limit, seed) always gives the same ids, whatever the manifest's order)."""
    return select_with_total(data)[0]


def select_with_total(data: DataSpec) -> tuple[list, int]:
    """(selected utterances, number of utterances in the whole set)."""
    from tarq.data import load_dataset, require_transcripts

    utts = sorted(load_dataset(data.path), key=lambda u: u.id)
    require_transcripts(utts, data.path)
    if data.limit is None or data.limit >= len(utts):
        return utts, len(utts)
    picked = random.Random(data.subset_seed).sample(range(len(utts)), data.limit)
    return [utts[i] for i in sorted(picked)], len(utts)


def data_fingerprint(utts: list) -> str:
    return short_hash([(u.id, u.text, Path(u.audio).name) for u in utts], 16)
