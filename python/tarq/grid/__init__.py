"""The experiment grid: models x methods x types x data sets x seeds, run as Ray tasks (``tarq grid``).

    from tarq.grid import load_spec, run_grid
    summary = run_grid(load_spec("grid.toml"), "runs/grid")     # results in runs/grid/results.json

See docs/evaluation.md ("The grid") for the spec format and the output layout.
"""
from .engine import run_grid
from .spec import DataSpec, GridSpec, MethodSpec, load_spec, parse_data, parse_method, spec_from_dict

__all__ = ["run_grid", "DataSpec", "GridSpec", "MethodSpec", "load_spec", "parse_data", "parse_method",
           "spec_from_dict"]
