"""bench_lattice_error's fit specs: FIT or FIT+refit, checked before any model loads."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_lattice_error  # noqa: E402


def test_fit_specs_map_to_plans():
    args = bench_lattice_error.parse_args(["--fits", "plain,weighted+refit", "--dry-run"])
    assert args.fits == ["plain", "weighted+refit"]
    plain, refit = (bench_lattice_error.plan_for("q4_0", f) for f in args.fits)
    assert (plain.fit, plain.refit) == ("plain", "none")
    assert (refit.fit, refit.refit) == ("weighted", "least-squares")


@pytest.mark.parametrize("spec, message", [("plain+lsq", "'plain+lsq'"), ("bogus", "'bogus'"),
                                           ("auto,plain+", "'plain+'")])
def test_bad_fit_spec_is_one_line_before_work(spec, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench_lattice_error.parse_args(["--fits", spec])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--fits:" in err and message in err and "Traceback" not in err
