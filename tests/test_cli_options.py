"""Options do what they say: inapplicable method options are errors, CLI choices come from the registries, and
--threads reaches every thread pool."""
from __future__ import annotations

import pytest
import torch

from tarq.cli.main import build_parser, main


def test_get_method_rejects_options_the_method_lacks():
    from tarq.methods import get_method

    with pytest.raises(ValueError, match=r"method 'gptq' has no option qep_alpha \(its options: damp, block_size"):
        get_method("gptq", qep_alpha=0.3)
    with pytest.raises(ValueError, match="has no option damp"):
        get_method("rtn", damp=0.1)
    assert get_method("qep", qep_alpha=0.3).config.qep_alpha == 0.3
    assert get_method("gptq", damp=None).config.damp == 0.01      # None: the method's default


def test_quantize_refuses_inapplicable_flag_before_any_work(tmp_path, capsys):
    rc = main(["quantize", "tiny.en", "--method", "gptq", "--qep-alpha", "0.3", "--out", str(tmp_path / "q")])
    assert rc == 1
    assert "--qep-alpha does not apply to --method gptq" in capsys.readouterr().err
    rc = main(["quantize", "tiny.en", "--method", "qep", "--alpha-rule", "fade", "--out", str(tmp_path / "q")])
    assert rc == 1 and "--alpha-rule does not apply to --method qep" in capsys.readouterr().err
    rc = main(["quantize", "tiny.en", "--method", "qep", "--fade-alpha-fit", "held-out", "--out", str(tmp_path / "q")])
    assert rc == 1 and "--fade-alpha-fit does not apply to --method qep" in capsys.readouterr().err
    rc = main(["quantize", "tiny.en", "--method", "rtn", "--damp", "0.1", "--out", str(tmp_path / "q")])
    assert rc == 1 and "--damp does not apply to --method rtn" in capsys.readouterr().err
    rc = main(["quantize", "tiny.en", "--method", "rtn", "--bias-correction", "mean", "--out", str(tmp_path / "q")])
    assert rc == 1 and "--bias-correction needs calibration statistics; --method rtn is data-free" in \
        capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_default_method_follows_the_type(tmp_path, capsys):
    from tarq.cli._choices import default_method

    # 4.5-bit and wider types: QEP (tiny.en Q4_0 evidence); under 4 bits (3.44-bit Q3_K, 2.62-bit Q2_K): GPTQ
    assert [default_method(t) for t in ("q4_0", "q4_k", "iq4_nl", "q5_0", "q8_0")] == ["qep"] * 5
    assert [default_method(t) for t in ("q3_k", "q2_k")] == ["gptq"] * 2
    # the CLI resolves the default from --format before any work: a QEP-only flag is refused for q3_k
    rc = main(["quantize", "tiny.en", "--format", "q3_k", "--qep-alpha", "0.3", "--out", str(tmp_path / "q")])
    assert rc == 1 and "--qep-alpha does not apply to --method gptq" in capsys.readouterr().err
    rc = main(["quantize", "tiny.en", "--format", "q4_0", "--alpha-rule", "fade", "--out", str(tmp_path / "q")])
    assert rc == 1 and "--alpha-rule does not apply to --method qep" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_the_default_method_brings_its_options_unless_they_are_given():
    from tarq.cli.quantize import resolve_method

    def resolved(*flags):
        args = build_parser().parse_args(["quantize", "tiny.en", "--out", "x", *flags])
        resolve_method(args)
        return args.method, args.qep_alpha, args.bias_correction

    assert resolved() == ("qep", 0.75, "mean-tokens")
    # and onto IQ4_NL: the default --format of quantize and the demo (no flag), Q4_0 only when asked for
    assert build_parser().parse_args(["quantize", "tiny.en", "--out", "x"]).format == "iq4_nl"
    assert build_parser().parse_args(["demo"]).format == "iq4_nl"
    assert build_parser().parse_args(["demo"]).baseline_format == "q4_0"
    assert resolved("--qep-alpha", "0.6") == ("qep", 0.6, "mean-tokens")
    assert resolved("--bias-correction", "none") == ("qep", 0.75, "none")
    assert resolved("--method", "qep") == ("qep", None, "none")          # plain QEP: the method's own α (0.5)
    assert resolved("--format", "q3_k") == ("gptq", None, "none")        # the low-bit default has no options
    assert resolved("--method", "gptq", "--bias-correction", "mean") == ("gptq", None, "mean")


def test_cli_choices_come_from_the_registries(capsys):
    from tarq.eval.backends import _REGISTRY, register_backend
    from tarq.methods import available_methods

    with pytest.raises(SystemExit):
        build_parser().parse_args(["quantize", "m", "--method", "awq", "--out", "x"])
    err = capsys.readouterr().err
    assert all(repr(m) in err for m in available_methods())
    register_backend("registry-probe")(object)
    try:
        args = build_parser().parse_args(["eval", "m", "--backend", "registry-probe", "--data", "d"])
        assert args.backend == "registry-probe"
    finally:
        _REGISTRY.pop("registry-probe")


def test_threads_reach_every_pool(monkeypatch):
    import os

    from tarq import kernels
    from tarq._threads import set_threads

    calls = []
    monkeypatch.setattr(kernels, "set_num_threads", calls.append, raising=False)
    old = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1 and calls == [1]
        assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["RAYON_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(old)
