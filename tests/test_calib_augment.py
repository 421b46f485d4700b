"""Augmented calibration copies (tarq.calib.augment): each transform against its definition, evaluated
independently (direct convolution, measured spectra and SNR, the Schroeder decay), and the driver's copies against
calibrating on the same copies written to disk as a second --calib source."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tarq.calib import augment as A
from tarq.calib.pipeline import CalibConfig
from tarq.models.whisper.adapter import WhisperAdapter

from test_pipeline import DEMO, loaded  # noqa: F401  (tiny random Whisper fixture)

SR = 16000


def _sine(hz, seconds=1.0):
    t = np.arange(int(seconds * SR)) / SR
    return np.sin(2 * np.pi * hz * t)


def _peak_hz(x):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / SR)[np.argmax(spec)]


@pytest.mark.parametrize("factor", A.SPEED_FACTORS)
def test_speed_moves_pitch_and_duration_together(factor):
    y = A.speed_perturb(_sine(500.0), factor)
    assert abs(len(y) - SR / factor) <= 2 + 0.02 * SR / factor   # 1/factor within limit_denominator(40)
    assert abs(_peak_hz(y) - 500.0 * factor) < 0.02 * 500.0 * factor


def test_fft_convolution_equals_direct_convolution():
    rng = np.random.default_rng(1)
    x, h = rng.standard_normal(1000), rng.standard_normal(137)
    np.testing.assert_allclose(A.fft_convolve(x, h), np.convolve(x, h), atol=1e-10)


@pytest.mark.parametrize("rt60", [0.2, 0.5])
def test_room_response_decays_60_db_in_rt60(rt60):
    h = A.synthetic_rir(np.random.default_rng(0), rt60)
    assert h[0] == 1.0 and len(h) == int(rt60 * SR)
    tail = h[1:] ** 2
    edc = np.cumsum(tail[::-1])[::-1]                    # Schroeder backward integral of the reflections
    db = 10 * np.log10(edc / edc[0])
    t = np.arange(len(db)) / SR
    fit = (t > 0.05 * rt60) & (db > -40)                 # the linear part, clear of the truncation at RT60
    slope = np.polyfit(t[fit], db[fit], 1)[0]           # dB per second
    assert abs(slope * rt60 + 60) < 6


def test_reverberation_keeps_the_level_and_the_direct_path_leads():
    x = _sine(300.0, 0.5)
    y = A.reverberate(x, A.synthetic_rir(np.random.default_rng(2), 0.3))
    assert len(y) == len(x) + int(0.3 * SR) // 2
    assert np.isclose(np.sqrt(np.mean(y ** 2)), np.sqrt(np.mean(x ** 2)))


def test_band_limit_removes_everything_outside_the_telephone_band_and_nothing_inside():
    x = _sine(100.0) + _sine(1000.0) + _sine(6000.0)
    y = A.band_limit(x, *A.TELEPHONE_BAND_HZ)
    np.testing.assert_allclose(y, _sine(1000.0), atol=1e-9)


@pytest.mark.parametrize("color", A.NOISE_COLORS)
def test_noise_is_added_at_exactly_the_drawn_snr(color):
    x = _sine(440.0)
    noise = A.colored_noise(np.random.default_rng(3), len(x), color)
    y = A.add_noise(x, noise, 12.5)
    assert np.isclose(10 * np.log10(np.sum(x ** 2) / np.sum((y - x) ** 2)), 12.5)


def test_noise_colours_have_their_spectral_slopes():
    n = 1 << 16
    for color, expected in (("white", 0.0), ("pink", -1.0), ("brown", -2.0)):
        power = np.abs(np.fft.rfft(A.colored_noise(np.random.default_rng(4), n, color))) ** 2
        f = np.fft.rfftfreq(n, 1 / SR)
        band = (f > 100) & (f < 6000)
        slope = np.polyfit(np.log10(f[band]), np.log10(power[band]), 1)[0]
        assert abs(slope - expected) < 0.1, (color, slope)


def test_parse_augment():
    assert A.parse_augment("none") == () and A.parse_augment("") == ()
    assert A.parse_augment("all") == A.KINDS
    assert A.parse_augment("noise, speed") == ("speed", "noise")      # application order, not the flag's
    for bad in ("loud", "speed,,loud", ","):
        with pytest.raises(ValueError, match="--augment"):
            A.parse_augment(bad)
    assert CalibConfig(augment="noise,speed").augment == "speed,noise"
    with pytest.raises(ValueError, match="augment_copies"):
        CalibConfig(augment="all", augment_copies=0)


def test_copies_are_seeded_per_copy_and_utterance():
    audios = [_sine(200.0, 0.4), _sine(300.0, 0.6)]
    one = A.augmented_copies(audios, A.KINDS, 1, seed=7)
    two = A.augmented_copies(audios, A.KINDS, 2, seed=7)
    assert [(c, i) for c, i, _, _ in two] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for (_, _, a, ra), (_, _, b, rb) in zip(one, two):    # a copy does not depend on how many others are made
        assert ra == rb and np.array_equal(a, b)
    other = A.augmented_copies(audios, A.KINDS, 1, seed=8)
    assert not all(np.array_equal(a[2], b[2]) for a, b in zip(one, other))
    for _, _, y, record in two:
        assert y.dtype == np.float32 and A.PEAK_RANGE[0] - 1e-6 <= np.max(np.abs(y)) <= A.PEAK_RANGE[1] + 1e-6
        assert set(record) <= {"speed", "rt60_s", "band_hz", "noise", "snr_db"} and "speed" in record


def test_driver_copies_equal_the_same_copies_given_as_a_second_source(loaded, tmp_path):  # noqa: F811
    """--augment X equals calibrating on the originals plus their copies written to disk (float WAV)."""
    import soundfile as sf

    from tarq.calib.driver import prepare_samples
    from tarq.calib.selection import combine_sources
    from tarq.data import load_audio, load_dataset

    utts = load_dataset(DEMO, limit=2)
    cfg = CalibConfig(progress=False, augment="all", augment_copies=2, seed=5)
    samples, info = prepare_samples(loaded, WhisperAdapter(), utts, cfg)
    assert [s.id for s in samples] == [u.id for u in utts] + [f"{u.id}#aug{c}" for c in (1, 2) for u in utts]
    assert [r["id"] for r in info["augmented"]] == [s.id for s in samples[2:]]

    copies = A.augmented_copies([load_audio(u.audio) for u in utts], A.KINDS, 2, seed=5)
    (tmp_path / "aug").mkdir()
    with open(tmp_path / "aug" / "manifest.jsonl", "w") as f:
        for c, i, y, _ in copies:
            sf.write(tmp_path / "aug" / f"{c}-{i}.wav", y, SR, subtype="FLOAT")
            f.write(json.dumps({"id": f"{utts[i].id}#aug{c}", "audio": f"{c}-{i}.wav", "text": utts[i].text}) + "\n")
    mixed, _ = combine_sources([("orig", utts), ("aug", load_dataset(tmp_path / "aug"))])
    plain, _ = prepare_samples(loaded, WhisperAdapter(), mixed, CalibConfig(progress=False))
    assert len(plain) == len(samples)
    for a, b in zip(samples, plain):
        assert torch.equal(a.features, b.features) and a.tokens == b.tokens and torch.equal(a.tail, b.tail)
        assert a.n_speech_frames == b.n_speech_frames


def test_no_augmentation_adds_nothing(loaded):  # noqa: F811
    from tarq.calib.driver import prepare_samples
    from tarq.data import load_dataset

    samples, info = prepare_samples(loaded, WhisperAdapter(), load_dataset(DEMO, limit=1), CalibConfig(progress=False))
    assert len(samples) == 1 and "augmented" not in info


def test_cli_rejects_a_wrong_augment_before_loading(tmp_path, capsys):
    from tarq.cli.main import main

    assert main(["quantize", "no/such/model", "--augment", "loud", "--calib", str(DEMO),
                 "--out", str(tmp_path / "q")]) == 1
    err = capsys.readouterr().err
    assert "--augment 'loud'" in err and len(err.strip().splitlines()) == 1


def test_copies_longer_than_the_window_are_left_out_and_named():
    from tarq.calib.driver import WINDOW_SAMPLES, add_augmented_copies

    ids, audios, texts = ["long"], [np.random.default_rng(0).standard_normal(WINDOW_SAMPLES - 800).astype(np.float32)], ["x"]
    records = add_augmented_copies(ids, audios, texts, CalibConfig(augment="speed", augment_copies=8, seed=0))
    drawn = [r for r in records if "speed" in r]
    left_out = next(r["left_out_over_30s"] for r in records if "left_out_over_30s" in r)
    assert len(drawn) + len(left_out) == 8 and drawn and left_out
    assert all(r["speed"] > 1 for r in drawn)                      # only a speed-up fits a clip this long
    assert all(len(a) <= WINDOW_SAMPLES for a in audios) and len(ids) == len(audios) == len(texts) == 1 + len(drawn)
