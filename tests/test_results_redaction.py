"""Committed benchmark results carry no transcripts of evaluation-only data (benchmarks/_redact.py), and redaction
keeps every number."""
from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from _redact import NOT_SHIPPED, find_unredacted, redact  # noqa: E402


def test_no_committed_result_carries_evaluation_only_transcripts():
    dirty = {}
    for path in sorted((BENCH / "results").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and find_unredacted(doc):
            dirty[path.name] = find_unredacted(doc)[:3]
    assert not dirty, f"run `python benchmarks/publish_grid.py --redact-committed`: {dirty}"


def test_grid_layout_loses_only_the_restricted_texts():
    doc = {"utterances": {"uqm-voice-dev": {"ids": ["u1"], "refs": ["a secret line"]},
                          "asterisk-prompts": {"ids": ["a1"], "refs": ["press one"]}},
           "systems": [{"key": "k", "hyps": {"uqm-voice-dev": ["a secret line"], "asterisk-prompts": ["press one"]},
                        "datasets": {"uqm-voice-dev": {"scores": {"wer": 0.25}}}}]}
    assert find_unredacted(doc) == ["utterances.uqm-voice-dev.refs", "systems[k].hyps.uqm-voice-dev"]
    out = redact(doc)
    assert out["utterances"] == {"uqm-voice-dev": {"ids": ["u1"]}, "asterisk-prompts": {"ids": ["a1"],
                                                                                      "refs": ["press one"]}}
    assert out["systems"][0]["hyps"] == {"asterisk-prompts": ["press one"]}
    assert out["systems"][0]["datasets"]["uqm-voice-dev"]["scores"] == {"wer": 0.25}
    assert set(out["redacted"]) == {"uqm-voice-dev"} and find_unredacted(out) == []
    assert redact(json.loads(json.dumps(out))) == out                  # idempotent


def test_a_result_with_systems_keyed_by_label_and_no_texts_is_clean():
    doc = {"systems": {"F16": {"model": "tiny.en", "sets": {"uqm-voice-dev": {"ids": ["u1"], "early": [1.5]}}}}}
    assert find_unredacted(doc) == [] and redact(json.loads(json.dumps(doc))) == doc


def test_older_accuracy_layout_is_redacted_per_utterance():
    utt = {"id": "u1", "ref": "a secret line", "hyp": "a secret line", "duration": 1.0}
    doc = {"models": {"tiny.en": {"systems": {"whisper.cpp": {"gptq": {"result": {"datasets": [
        {"name": "uqm-voice-dev", "utterances": [dict(utt)]},
        {"name": "foldoc-tts-dev", "utterances": [dict(utt, id="f1")]}]}}}}}}}
    assert len(find_unredacted(doc)) == 1
    sets = redact(doc)["models"]["tiny.en"]["systems"]["whisper.cpp"]["gptq"]["result"]["datasets"]
    assert sets[0]["utterances"] == [{"id": "u1", "duration": 1.0}]
    assert sets[1]["utterances"][0]["ref"] == "a secret line"
    assert list(doc["redacted"]) == list(NOT_SHIPPED)
