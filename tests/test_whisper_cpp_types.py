"""Every ggml type through the whisper.cpp exporter and both real runtimes, on a small random Whisper whose rows are
256 wide (so the K-quants fit): RTN and imatrix-RTN bytes equal libggml's per tensor, and a file of every type loads
and transcribes in whisper.cpp (pywhispercpp) and CrispASR. Real models: test_whisper_cpp_runtime.py (tiny.en) and
the slow tests at the end of this file (base)."""
from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
import pytest
import torch

from test_export_fixtures import random_quantized_dir, real_tokenizer, tiny_whisper
from tarq.ggml import QUANT_TYPES

os.environ.setdefault("GGML_NO_BACKTRACE", "1")
pytestmark = pytest.mark.runtime
torch.set_num_threads(1)
QTYPES = list(QUANT_TYPES)


def _oracle():
    from tarq.export.ggml_oracle import find_ggml_base_libs, load_ggml

    if "pywhispercpp" not in find_ggml_base_libs():
        pytest.skip("pywhispercpp's libggml-base not installed")
    return load_ggml("pywhispercpp")


@pytest.fixture(scope="module")
def model256():
    return tiny_whisper(d_model=256, layers=1, seed=1)


@pytest.mark.parametrize("qtype", QTYPES)
def test_rtn_and_imatrix_rtn_tensors_equal_libggml(model256, qtype):
    """The exporter's RTN path (rtn_quantized_tensors: the bytes float_to_whisper_file writes) vs ggml_quantize_chunk
    on the fp16-rounded weights, without and with importance weights, for every weight of the layer stack (the
    51864-row token embedding is left to the real-model tests to keep this fast)."""
    from tarq.export.whisper_export import rtn_quantized_tensors

    oracle = _oracle()
    sd = {k: v for k, v in model256.state_dict().items() if "embed_tokens" not in k}
    rng = np.random.default_rng(0)
    imx = {k: torch.from_numpy(rng.uniform(0, 2, v.shape[1]).astype(np.float32)) for k, v in sd.items()
           if v.ndim == 2}
    plain, weighted = rtn_quantized_tensors(sd, qtype), rtn_quantized_tensors(sd, qtype, imx)
    assert len(plain) == 16   # 6 in the encoder layer, 10 in the decoder layer (self + cross attention, MLP)
    for name, qt in plain.items():
        f16 = sd[name].numpy().astype(np.float16).astype(np.float32)
        assert np.array_equal(qt.numpy(), oracle.quantize(qtype, f16)), name
        assert np.array_equal(weighted[name].numpy(), oracle.quantize(qtype, f16, imx[name].numpy())), name


@pytest.fixture(scope="module")
def typed_files(tmp_path_factory, model256):
    """A whisper.cpp file per type holding random data of that type (exported verbatim from a quantized dir)."""
    from tarq.export.whisper_export import export_whisper_cpp

    tok = real_tokenizer()
    root = tmp_path_factory.mktemp("types")
    return {q: export_whisper_cpp(random_quantized_dir(root / q, model256, tok, q, seed=5), root / f"{q}.bin")
            for q in QTYPES}


@contextlib.contextmanager
def _native_stdout_to_stderr():
    """The runtimes print to the C stdout (fd 1); keep it out of pytest's captured stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _short_transcripts(path, audio):
    """Load ``path`` in whisper.cpp (pywhispercpp) and CrispASR and decode a few tokens greedily (a random model
    never emits end-of-text, so the token cap keeps this fast)."""
    import crispasr
    from pywhispercpp.model import Model

    with _native_stdout_to_stderr():
        m = Model(str(path), n_threads=1, language="en", no_timestamps=True, print_progress=False,
                  print_realtime=False, print_timestamps=False, redirect_whispercpp_logs_to=None, temperature_inc=0.0,
                  max_tokens=4)
        wcpp = " ".join(s.text for s in m.transcribe(audio))
        del m
        c = crispasr.CrispASR(str(path))
        try:
            crisp = [s.text for s in c.transcribe_pcm(audio, sample_rate=16000, language="en",
                                                     decode_options={"n_threads": 1, "max_tokens": 4,
                                                                     "print_progress": False})]
        except UnicodeDecodeError as e:
            # the decoder ran; a random model emits arbitrary byte tokens, which CrispASR's Python binding decodes
            # strictly as UTF-8 (pywhispercpp replaces them)
            crisp = [e.object.decode("utf-8", errors="replace")]
        finally:
            c.close()
    return wcpp, crisp


@pytest.mark.parametrize("qtype", QTYPES)
def test_every_type_loads_and_transcribes_in_both_runtimes(typed_files, qtype):
    from tarq.export.whisper_cpp import read_whisper_cpp

    pytest.importorskip("pywhispercpp")
    pytest.importorskip("crispasr")
    path = typed_files[qtype]
    mf = read_whisper_cpp(path)
    assert mf.wtype.name == qtype and mf.hparams.ftype == 2000 + QUANT_TYPES[qtype].ftype
    audio = np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 0.1
    wcpp, crisp = _short_transcripts(path, audio)
    assert isinstance(wcpp, str) and len(wcpp.split()) >= 1    # whisper.cpp decoded tokens with these weights
    assert isinstance(crisp, list)                              # CrispASR loaded the file and ran the decoder


# --------------------------------------------------------------------------- real models (slow)

REAL_TYPES = [("tiny.en", q) for q in QTYPES if QUANT_TYPES[q].block_size == 32] + [("base", q) for q in QTYPES]


@pytest.fixture(scope="module")
def real_models():
    cache = {}

    def get(spec):
        if spec not in cache:
            from tarq.models import load_model

            try:
                cache[spec] = load_model(spec)
            except (ImportError, FileNotFoundError) as e:
                pytest.skip(f"{spec} not available: {e}")
        return cache[spec]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("spec,qtype", REAL_TYPES, ids=[f"{s}-{q}" for s, q in REAL_TYPES])
def test_real_model_rtn_and_imatrix_files_equal_libggml_per_tensor(tmp_path, real_models, spec, qtype):
    """tarq export --rtn TYPE (and with importance vectors) on a real model, tensor by tensor against libggml's
    ggml_quantize_chunk on the F16 file's tensors (whisper.cpp's quantize reads exactly those)."""
    from tarq.export.whisper_cpp import read_whisper_cpp, write_whisper_bin
    from tarq.export.whisper_export import float_to_whisper_file, quantizable_names

    oracle = _oracle()
    lm = real_models(spec)
    sd, cfg = lm.model.state_dict(), lm.model.config.to_dict()
    rng = np.random.default_rng(7)
    imx = {hf: torch.from_numpy((10.0 ** rng.uniform(-3, 1, sd[hf].shape[1])).astype(np.float32))
           for hf in quantizable_names(sd)}
    f16 = read_whisper_cpp(write_whisper_bin(tmp_path / "f16.bin", float_to_whisper_file(sd, cfg, lm.tokenizer)))
    from tarq.export import whisper_names as names

    by_cpp = {names.hf_to_cpp(hf): v.numpy() for hf, v in imx.items()}
    for label, matrix in (("rtn", None), ("imatrix", imx)):
        ours = read_whisper_cpp(write_whisper_bin(tmp_path / f"{label}.bin", float_to_whisper_file(
            sd, cfg, lm.tokenizer, wtype=qtype, imatrix=matrix)))
        n_quantized = 0
        for name, src in f16.tensors.items():
            got = ours.tensors[name]
            if src.ggml_type.name == "f16" and len(src.shape) == 2:
                want = oracle.quantize(qtype, src.to_float(), None if matrix is None else by_cpp[name])
                assert np.array_equal(got.data, want.reshape(-1)), f"{spec} {qtype} {label}: {name}"
                n_quantized += 1
            else:
                assert got.ggml_type is src.ggml_type and np.array_equal(got.data, src.data), name
        hp = f16.hparams
        assert n_quantized == 6 * hp.n_audio_layer + 10 * hp.n_text_layer + 1


@pytest.mark.slow
@pytest.mark.parametrize("qtype", QTYPES)
def test_real_base_file_of_every_type_transcribes_in_both_runtimes(tmp_path, real_models, qtype):
    from test_export_fixtures import asterisk_prompts
    from tarq.eval import score_corpus
    from tarq.eval.runtimes import transcribe_file
    from tarq.export.whisper_export import export_whisper_cpp

    pytest.importorskip("pywhispercpp")
    pytest.importorskip("crispasr")
    path = export_whisper_cpp(real_models("base"), tmp_path / f"base-{qtype}.bin", rtn=qtype)
    audios, refs = asterisk_prompts(2, skip=2)
    if qtype == "q2_k":
        # whisper.cpp's own Q2_K of base (these bytes equal libggml's: the per-tensor test above) is unusable in both
        # runtimes (measured: "I I I ...", "8 8 8 ..."), so the RTN file is only required to load and decode; the
        # decoding check runs on the solver's Q2_K codes instead (GPTQ on the bundled calibration clips).
        for runtime in ("whisper.cpp", "crispasr"):
            assert len(transcribe_file(runtime, path, audios, threads=2, policy="greedy")) == 2
        path = _solver_file(tmp_path, "base", "gptq", qtype)
    max_wer = 0.5 if qtype == "q2_k" else 0.25   # 2.6 bits per weight: worse, but a transcript of the prompt
    for runtime in ("whisper.cpp", "crispasr"):
        hyps = transcribe_file(runtime, path, audios, threads=2, policy="greedy")
        assert len(hyps) == 2 and all(hyps)
        assert score_corpus(refs, hyps).wer <= max_wer, (qtype, hyps)


def _solver_file(tmp_path, model: str, method: str, qtype: str):
    """A whisper.cpp file of the solver's codes: tarq quantize (the bundled calibration clips) + tarq export."""
    from test_export_fixtures import DEMO_CALIB
    from tarq.cli.main import main

    qdir, out = tmp_path / f"{model}-{method}-{qtype}", tmp_path / f"{model}-{method}-{qtype}.bin"
    assert main(["quantize", model, "--method", method, "--format", qtype, "--calib", str(DEMO_CALIB),
                 "--n-calib", "16", "--out", str(qdir)]) == 0
    assert main(["export", str(qdir), "--to", "whisper.cpp", "--out", str(out)]) == 0
    return out
