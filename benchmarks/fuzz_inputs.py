"""Fuzz tarq's input handling: N mutated model files and M bad data sets through the reader, transcribe and eval.

    python benchmarks/fuzz_inputs.py --models 1000 --datasets 200          # the full run (tiny.en Q4_0 .bin)
    python benchmarks/fuzz_inputs.py --models 40 --datasets 12 --source random --no-save   # quick (CI: tests/)

Every case goes through four stages: ``reader`` (tarq.eval.runtimes.check_model_file, or load_dataset + load_audio
for data), ``transcribe`` (``tarq transcribe MODEL CLIP``), ``verify`` (``tarq transcribe --verify``, with the clean
file's checksum sidecar beside the mutant; model cases only) and ``eval`` (``tarq eval MODEL --data DATA``). The
commands run in worker processes of this script ("shards"), so a crash of tarq's own process is seen as what it
is. Outcomes, per stage:

  clean error     exit 1, exactly one stderr line "tarq CMD: error: ...", naming the model file / data file
  ok              exit 0 and the same text as the clean model (model cases) or a non-empty result (data cases)
  ok, different   exit 0, the file passed validation and the text differs (a weight changed: only --verify or
                  the checksum can tell; never counted as a failure of validation)
  empty, reported exit 0, empty text of non-silent audio, with tarq's warning
  silent empty    exit 0, empty text of non-silent audio, no warning                      (failure)
  silent garbage  exit 0 with output although the reader rejected the file               (failure)
  messy error     failed, but not with one line naming the file                           (failure)
  traceback       a Python traceback                                                      (failure)
  segfault/abort/killed/hang   tarq's own process died or stopped answering               (failure)
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import logging
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

FAILURES = ("silent empty", "silent garbage", "messy error", "traceback", "segfault", "abort", "killed", "hang")
STAGES = ("reader", "transcribe", "verify", "eval")
SHARD_TIMEOUT_S = 300     # a shard silent this long is hung


# ----------------------------------------------------------------------------------------------- fixtures

def build_fixtures(work: Path, source: str) -> dict:
    """Clean model files, a clip and a 2-utterance data set, and the clean outputs to compare against."""
    from _common import ensure_tarq_importable

    ensure_tarq_importable()
    from tarq.cli.demo import bundled_data_dir
    from tarq.export.integrity import write_checksum

    demo = bundled_data_dir() / "eval"
    rows = [json.loads(x) for x in (demo / "manifest.jsonl").read_text().splitlines() if x.strip()]
    row = next(r for r in rows if len(r["text"].split()) >= 6)
    data = work / "data"
    (data / "audio").mkdir(parents=True)
    for r in (row, rows[0]):
        shutil.copy(demo / r["audio"], data / r["audio"])
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (row, rows[0])))
    clip = data / row["audio"]
    if source == "tiny.en":
        from _artifacts import baseline_bin

        binf = work / "clean.bin"
        shutil.copy(baseline_bin("tiny.en", "q4_0").path, binf)
    else:
        binf = _random_bin(work / "clean.bin")
    gguf = _random_gguf(work)
    for f in (binf, gguf):
        write_checksum(f)
    clean = _run_cli(["transcribe", str(binf), str(clip), "--threads", "1"])
    if clean[0] != 0:
        raise SystemExit(f"the clean model does not transcribe: {clean}")
    text = clean[1].strip().split("\t", 1)[-1] if "\t" in clean[1] else ""
    return {"bin": str(binf), "gguf": str(gguf), "clip": str(clip), "data": str(data), "clean_text": text,
            "good_audio": str(clip), "good_text": row["text"]}


def _random_bin(path: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_export_fixtures import real_tokenizer, tiny_whisper
    from tarq.export.whisper_cpp import write_whisper_bin
    from tarq.export.whisper_export import float_to_whisper_file

    m = tiny_whisper()
    return write_whisper_bin(path, float_to_whisper_file(m.state_dict(), m.config.to_dict(), real_tokenizer(),
                                                         wtype="q4_0"))


def _random_gguf(work: Path) -> Path:
    """A GGUF whose architecture claims qwen3asr (so CrispASR tries to run it) holding a tiny random Whisper."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_export_fixtures import random_quantized_dir, real_tokenizer, tiny_whisper
    from tarq.export.gguf_writer import FAMILIES, GgufFamily, register_family, write_gguf

    if "fuzz-qwen3asr" not in FAMILIES:
        generic = FAMILIES["generic"]
        register_family("fuzz-qwen3asr", GgufFamily("qwen3asr", generic.write_keys, generic.tensor_name))
    qdir = random_quantized_dir(work / "qdir", tiny_whisper(), real_tokenizer(), "q4_0", 32)
    return write_gguf(qdir, work / "clean.gguf", family="fuzz-qwen3asr")


# ----------------------------------------------------------------------------------------------- running one command

def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``tarq ARGV`` in this process: (exit code, stdout, stderr incl. log lines); a traceback is returned as rc 99."""
    from tarq.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:]
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 2
            except BaseException:  # noqa: BLE001 - this is what the fuzzer looks for
                traceback.print_exc(file=err)
                rc = 99
    finally:
        root.handlers = saved
    return rc, out.getvalue(), err.getvalue()


def _stage(res: dict, stage: str, verdict_and_detail) -> None:
    """Store a stage's outcome; for failure outcomes also what was printed (to find the cause); note native
    runtime crashes that the worker isolation turned into clean errors."""
    verdict, detail = verdict_and_detail
    res[stage] = verdict
    if verdict in FAILURES:
        res.setdefault("detail", {})[stage] = detail[-1500:]
    crash = re.search(r"crashed \((SIG\w+|exit status -?\d+)\)", detail)
    if crash:
        res.setdefault("contained_crash", {})[stage] = crash.group(1)


def classify(rc: int, out: str, err: str, names: list[str], clean_text: str | None, reader_ok: bool):
    return classify_cli(rc, out, err, names, clean_text, reader_ok), f"rc={rc} stderr={err!r} stdout={out[-300:]!r}"


def classify_cli(rc: int, out: str, err: str, names: list[str], clean_text: str | None, reader_ok: bool) -> str:
    errors = [ln for ln in err.splitlines() if ln.startswith("tarq ") and ": error: " in ln]
    if rc == 99 or "Traceback (most recent call last)" in err:
        return "traceback"
    if rc != 0:
        others = [ln for ln in err.splitlines() if ln.strip() and ln not in errors]
        if len(errors) == 1 and not others and any(n in errors[0] for n in names):
            return "clean error"
        return "messy error"
    text = out.strip().split("\t", 1)[-1] if "\t" in out else out.strip()
    if not reader_ok:
        return "silent garbage"
    if clean_text is None:
        return "ok"
    if not text:
        return "empty, reported" if "empty transcript" in err else "silent empty"
    return "ok" if text == clean_text else "ok, different"


def classify_reader(fn, names: list[str]) -> tuple[tuple[str, str], bool]:
    try:
        fn()
        return ("ok", ""), True
    except (ValueError, OSError) as e:
        msg = str(e)
        ok = "\n" not in msg.strip() and any(n in msg for n in names)
        return ("clean error" if ok else "messy error", f"{type(e).__name__}: {msg}"), False
    except BaseException:  # noqa: BLE001
        return ("traceback", traceback.format_exc()), False


# ----------------------------------------------------------------------------------------------- cases

def model_case(i: int, fx: dict, work: Path, seed: int, gguf_share: float) -> dict:
    from _fuzz_cases import bin_layout, gguf_data_offset, mutate_bin, mutate_gguf
    from tarq.eval.runtimes import check_model_file

    rng = random.Random(seed * 1_000_003 + i)
    is_gguf = rng.random() < gguf_share
    src = Path(fx["gguf" if is_gguf else "bin"])
    raw = src.read_bytes()
    if is_gguf:
        data, what = mutate_gguf(raw, fx.setdefault("_gguf_off", gguf_data_offset(src)), rng)
    else:
        data, what = mutate_bin(raw, fx.setdefault("_lay", bin_layout(raw)), rng)
    path = work / f"m{i:05d}{src.suffix}"
    path.write_bytes(data)
    shutil.copy(str(src) + ".sha256", str(path) + ".sha256")   # the clean file's checksum: --verify must object
    names = [str(path)]
    runtime = "crispasr" if is_gguf else "whisper.cpp"
    res = {"case": i, "kind": "gguf" if is_gguf else "bin", "mutation": what, "identical": data == raw}
    reader, reader_ok = classify_reader(lambda: check_model_file(path, runtime), names)
    _stage(res, "reader", reader)
    clean_text = fx["clean_text"] if not is_gguf else None
    common = ["--threads", "1", "--backend", runtime]
    _stage(res, "transcribe", classify(*_run_cli(["transcribe", str(path), fx["clip"], *common]), names, clean_text,
                                       reader_ok))
    _stage(res, "verify", classify(*_run_cli(["transcribe", str(path), fx["clip"], "--verify", *common]), names,
                                   clean_text, reader_ok and data == raw))
    _stage(res, "eval", classify(*_eval(path, fx["data"], common, work, i), names, None, reader_ok))
    for f in (path, Path(str(path) + ".sha256")):
        f.unlink(missing_ok=True)
    return res


def _eval(model: Path, data: str, common: list[str], work: Path, i: int):
    out = work / f"e{i:05d}.json"
    rc, so, se = _run_cli(["eval", str(model), "--data", data, "--no-progress", "--json", str(out), *common])
    out.unlink(missing_ok=True)
    return rc, so, se


def data_case(i: int, fx: dict, work: Path, seed: int) -> dict:
    from _fuzz_cases import make_bad_dataset
    from tarq.data import load_audio, load_dataset

    rng = random.Random(seed * 7_000_003 + i)
    root, kind = make_bad_dataset(work / f"d{i:05d}", rng, Path(fx["good_audio"]), fx["good_text"])
    names = [str(root)] + [str(p) for p in root.rglob("*")]
    res = {"case": i, "kind": "data", "mutation": kind}

    def read():
        for u in load_dataset(root):
            load_audio(u.audio)

    reader, reader_ok = classify_reader(read, names)
    _stage(res, "reader", reader)
    audio_files = sorted(str(p) for p in root.rglob("*") if p.suffix in (".flac", ".wav", ".txt") and p.name != "notes.txt")
    if audio_files:
        rc, so, se = _run_cli(["transcribe", fx["bin"], *audio_files[:1], "--threads", "1"])
        verdict, detail = classify(rc, so, se, names, None, True)
        if verdict == "ok" and not so.strip().split("\t", 1)[-1] and kind != "silence":
            verdict = "empty, reported" if "empty transcript" in se else "silent empty"
        _stage(res, "transcribe", (verdict, detail))
    out = work / f"e{i:05d}.json"
    rc, so, se = _run_cli(["eval", fx["bin"], "--data", str(root), "--no-progress", "--threads", "1", "--json",
                           str(out)])
    verdict, detail = classify(rc, so, se, names, None, reader_ok)
    if rc == 0 and verdict == "ok" and out.is_file():
        hyps = [u["hyp"] for d in json.loads(out.read_text())["datasets"] for u in d.get("utterances", [])
                if "hyp" in u]
        if any(not h for h in hyps) and kind != "silence":
            verdict = "empty, reported" if "empty transcript" in se else "silent empty"
    _stage(res, "eval", (verdict, detail))
    shutil.rmtree(root, ignore_errors=True)
    out.unlink(missing_ok=True)
    return res


# ----------------------------------------------------------------------------------------------- shards

def shard_main(args) -> int:
    """Run cases [start, stop) and print one JSON line per finished case; "@@ case N" before each."""
    from _common import ensure_tarq_importable

    ensure_tarq_importable()
    os.environ["GGML_NO_BACKTRACE"] = "1"
    fx = json.loads(Path(args.fixtures).read_text())
    work = Path(args.work)
    for i in range(args.start, args.stop):
        print(f"@@ case {i}", flush=True)
        if i < args.n_models:
            res = model_case(i, fx, work, args.seed, args.gguf_share)
        else:
            res = data_case(i - args.n_models, fx, work, args.seed)
        res["index"] = i
        print(json.dumps(res), flush=True)
    return 0


def run_all(args) -> dict:
    from _common import RunMeta, bench_env

    meta = RunMeta.start("fuzz_inputs")
    work = Path(tempfile.mkdtemp(prefix="tarq-fuzz-"))
    try:
        fx = build_fixtures(work, args.source)
        (work / "fixtures.json").write_text(json.dumps(fx))
        total = args.models + args.datasets
        results, i = [], 0
        t0 = time.perf_counter()
        while i < total:
            cmd = [sys.executable, __file__, "--shard", "--fixtures", str(work / "fixtures.json"), "--work", str(work),
                   "--start", str(i), "--stop", str(total), "--n-models", str(args.models), "--seed", str(args.seed),
                   "--gguf-share", str(args.gguf_share)]
            err_file = tempfile.TemporaryFile(mode="w+")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_file, text=True,
                                    env=bench_env(threads=1), start_new_session=True)
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)],
                             daemon=True).start()
            current, hung = None, False
            while True:
                try:
                    line = lines.get(timeout=SHARD_TIMEOUT_S)
                except queue.Empty:   # no progress: kill the shard and the runtime workers it started
                    hung = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                if line is None:
                    break
                if line.startswith("@@ case "):
                    current = int(line.split()[2])
                elif line.startswith("{"):
                    results.append(json.loads(line))
                    i = results[-1]["index"] + 1
                    if len(results) % 25 == 0:
                        print(f"{len(results)}/{total} cases ({time.perf_counter() - t0:.0f} s)", flush=True)
            rc = proc.wait()
            if rc != 0 or hung:   # tarq's own process died (or stopped answering) on case `current`
                err_file.seek(0)
                err = err_file.read()[-2000:]
                kind = "hang" if hung else {-11: "segfault", -6: "abort"}.get(rc, "killed" if rc < 0 else "traceback")
                j = current if current is not None else i
                results.append({"index": j, "case": j if j < args.models else j - args.models,
                                "kind": "model" if j < args.models else "data", "mutation": "? (process died)",
                                **{s: kind for s in STAGES}, "stderr_tail": err})
                i = j + 1
            err_file.close()
        return {"meta": meta.finish(), "source": args.source, "seed": args.seed, "n_models": args.models,
                "n_datasets": args.datasets, "table": summarize(results), "failures": _failures(results),
                "contained_crashes": contained_crashes(results),
                "cases": results}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summarize(results: list[dict]) -> dict:
    table: dict = {}
    for r in results:
        group = "data sets" if r["kind"] == "data" else f"model files ({r['kind']})"
        for stage in STAGES:
            if stage in r:
                table.setdefault(group, {}).setdefault(stage, collections.Counter())[r[stage]] += 1
    return {g: {s: dict(c) for s, c in st.items()} for g, st in table.items()}


def contained_crashes(results: list[dict]) -> dict:
    """{group: {signal: number of commands}}: native runtime crashes reported as one-line errors."""
    out: dict = {}
    for r in results:
        group = "data sets" if r["kind"] == "data" else f"model files ({r['kind']})"
        for sig in r.get("contained_crash", {}).values():
            out.setdefault(group, collections.Counter())[sig] += 1
    return {g: dict(c) for g, c in out.items()}


def _failures(results: list[dict]) -> list[dict]:
    return [r for r in results if any(r.get(s) in FAILURES for s in STAGES)]


def render_markdown(res: dict) -> str:
    outcomes = ["clean error", "ok", "ok, different", "empty, reported"] + list(FAILURES)
    lines = [f"| input | stage | {' | '.join(outcomes)} |", "|" + "---|" * (len(outcomes) + 2)]
    for group, stages in res["table"].items():
        for stage, counts in stages.items():
            lines.append(f"| {group} | {stage} | " + " | ".join(str(counts.get(o, 0)) for o in outcomes) + " |")
    text = "\n".join(lines) + f"\n\n{len(res['failures'])} case(s) with a failure outcome."
    crashes = res.get("contained_crashes") or {}
    if crashes:
        text += (" Native runtime crashes contained by the worker processes (reported as the clean errors above): "
                 + "; ".join(f"{g}: " + ", ".join(f"{n} {sig}" for sig, n in c.items()) for g, c in crashes.items())
                 + ".")
    for r in res["failures"][:20]:
        text += f"\n- {r['kind']} case {r['case']} ({r['mutation']}): " + json.dumps(r.get("detail", {}))[:600]
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=1000, help="mutated model files")
    p.add_argument("--datasets", type=int, default=200, help="bad data sets")
    p.add_argument("--source", choices=("tiny.en", "random"), default="tiny.en",
                   help="the clean .bin: tiny.en RTN Q4_0 (real speech, so 'different text' means something) or a "
                        "tiny random Whisper (fast)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gguf-share", type=float, default=0.2, help="share of model cases that mutate the GGUF")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "fuzz_inputs.json")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    for hidden in ("--shard",):
        p.add_argument(hidden, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fixtures", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--start", type=int, help=argparse.SUPPRESS)
    p.add_argument("--stop", type=int, help=argparse.SUPPRESS)
    p.add_argument("--n-models", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.shard:
        return shard_main(args)
    res = run_all(args)
    if not args.no_save:
        from _common import write_json

        write_json(args.out, res)
        print(f"wrote {args.out}")
    print(render_markdown(res))
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
