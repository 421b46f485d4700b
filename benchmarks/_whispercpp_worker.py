"""One deployment measurement in a fresh process: load a whisper.cpp model, transcribe one clip N times.

Run by bench_deployment.py (never imported by it) so that each measurement's peak RSS belongs to one model and
one clip only. Prints one JSON line: load_s, transcribe_s (per call; the first call includes whisper.cpp's
compute-buffer allocation), the text, and VmHWM / VmRSS from /proc/self/status.

    python benchmarks/_whispercpp_worker.py --model X.bin --audio clip.npy --threads 2 --calls 2
    python benchmarks/_whispercpp_worker.py --baseline      # import only: the interpreter + library floor
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("GGML_NO_BACKTRACE", "1")   # a ggml assert must abort, not wait for a debugger


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _system_info() -> str:
    import _pywhispercpp as pw

    try:
        return str(pw.whisper_print_system_info())
    except Exception as e:  # noqa: BLE001 - diagnostic only
        return f"unavailable: {e}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="whisper.cpp ggml .bin")
    p.add_argument("--audio", help=".npy float32 16 kHz mono clip")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calls", type=int, default=2, help="transcribe calls on the same loaded model")
    p.add_argument("--language", default="en")
    p.add_argument("--gpu", action="store_true", help="ask whisper.cpp for its GPU backend (use_gpu)")
    p.add_argument("--baseline", action="store_true", help="only import numpy + pywhispercpp and report RSS")
    args = p.parse_args(argv)

    import numpy as np
    from pywhispercpp.model import Model

    if args.baseline:
        print(json.dumps({"vmhwm_mb": _proc_status_mb("VmHWM"), "vmrss_mb": _proc_status_mb("VmRSS")}))
        return 0
    if not args.model or not args.audio:
        p.error("--model and --audio are required (or --baseline)")

    audio = np.load(args.audio).astype(np.float32, copy=False)
    rss_before_load = _proc_status_mb("VmRSS")
    t0 = time.perf_counter()
    # The settings the accuracy benchmark decodes with (tarq.eval's whisper.cpp backend: greedy, temperature
    # fallback off, fixed language, no timestamps), so timings describe the configuration whose WER we report.
    model = Model(args.model, redirect_whispercpp_logs_to=None, context_params={"use_gpu": bool(args.gpu)},
                  n_threads=args.threads, language=args.language,
                  print_progress=False, print_realtime=False, print_timestamps=False, no_timestamps=True,
                  no_context=True, translate=False, temperature_inc=0.0)
    load_s = time.perf_counter() - t0
    rss_after_load = _proc_status_mb("VmRSS")
    times, text = [], ""
    for _ in range(args.calls):
        t0 = time.perf_counter()
        segments = model.transcribe(audio)
        times.append(time.perf_counter() - t0)
        text = " ".join(s.text.strip() for s in segments).strip()
    print(json.dumps({
        "system_info": _system_info() if args.gpu else None, "load_s": load_s, "transcribe_s": times, "text": text,
        "audio_s": audio.size / 16000.0,
        "rss_before_load_mb": rss_before_load, "rss_after_load_mb": rss_after_load,
        "vmhwm_mb": _proc_status_mb("VmHWM"), "vmrss_mb": _proc_status_mb("VmRSS"),
    }))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
