"""Copy a grid's results into benchmarks/results/ under a name, without evaluation-only data.

    python benchmarks/publish_grid.py GRID_DIR NAME     # -> benchmarks/results/NAME.{json,md,png}[, NAME_frontier.png]
    python benchmarks/publish_grid.py --redact-committed  # redact every committed result JSON in place

The JSON is the grid's ``results.json`` with the reference transcripts and hypotheses of the sets in
``_redact.NOT_SHIPPED`` removed (see _redact.py); the markdown and plots carry only numbers and are copied as they
are. A grid folder keeps its cell files, so a redacted set can still be re-scored from there.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, loadavg, machine_info, read_json, utc_now, write_json  # noqa: E402
from _redact import find_unredacted, redact  # noqa: E402


def publish(grid: Path, name: str, results_dir: Path = RESULTS_DIR) -> list[Path]:
    src = grid / "results.json"
    if not src.is_file():
        raise ValueError(f"{src}: no grid results (run `tarq grid ... --out {grid}` first)")
    doc = redact(read_json(src))
    # the grid records per cell what ran (runtime, library versions, timings) but not the machine: the publishing
    # machine and commit are recorded here, with the load at publishing time (the run's load is not known here)
    doc["meta"] = {"published": utc_now(), "machine": machine_info(), "loadavg_at_publish": loadavg(),
                   "grid_folder": str(grid), "grid_created": doc.get("created")}
    out = [write_json(results_dir / f"{name}.json", doc)]
    for source, target in (("results.md", f"{name}.md"), ("results.png", f"{name}.png"),
                           ("frontier.png", f"{name}_frontier.png")):
        if (grid / source).is_file():
            shutil.copyfile(grid / source, results_dir / target)
            out.append(results_dir / target)
    return out


def redact_committed(results_dir: Path = RESULTS_DIR) -> list[Path]:
    changed = []
    for path in sorted(results_dir.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and find_unredacted(doc):
            write_json(path, redact(doc))
            changed.append(path)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("grid", nargs="?", type=Path, help="grid folder (tarq grid --out)")
    p.add_argument("name", nargs="?", help="result name under benchmarks/results/")
    p.add_argument("--redact-committed", action="store_true", help="redact every committed result JSON in place")
    args = p.parse_args(argv)
    try:
        if args.redact_committed:
            for path in redact_committed():
                print(f"redacted {path}")
            return 0
        if not args.grid or not args.name:
            p.error("GRID_DIR and NAME are required (or --redact-committed)")
        for path in publish(args.grid, args.name):
            print(f"wrote {path}")
    except (OSError, ValueError) as e:
        print(f"publish_grid: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
