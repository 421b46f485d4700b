"""Keep evaluation-only data out of committed results.

``../shared/data/README.md`` marks uqm-voice-dev "evaluation only (never calibration, never shipped)": its
recordings and transcripts are CC-BY-NC-SA voice acting that this repository must not redistribute. A result file
carries, for re-scoring, every utterance's reference transcript and every system's hypothesis — for uqm-voice-dev
that would ship the transcripts (and near-copies of them, F16's hypotheses). ``redact`` removes both for the sets in
``NOT_SHIPPED`` and keeps everything computed from them (ids, scores, damage, CIs, failure ids, timings), recording
what it removed under ``"redacted"``. Re-scoring such a set reads the grid folder (its cell files), not the
committed JSON. Both layouts are handled: ``tarq-grid-results`` and the older bench_accuracy layout.
"""
from __future__ import annotations

NOT_SHIPPED = {"uqm-voice-dev": "../shared/data/README.md: evaluation only, never shipped (CC-BY-NC-SA-2.5 voice "
                                "acting); reference transcripts and hypotheses removed"}


def _set_name(name: str) -> str | None:
    return next((n for n in NOT_SHIPPED if n == name or name.startswith(n + "@")), None)


def _restricted_texts(doc: dict):
    """Every place a result document keeps texts of a NOT_SHIPPED set: (set name, where, container, keys) — the
    one definition of where they live, shared by ``redact`` and ``find_unredacted``."""
    for name, block in (doc.get("utterances") or {}).items():          # tarq-grid-results
        if _set_name(name):
            yield name, f"utterances.{name}.refs", block, ("refs",)
    systems = doc.get("systems")
    for s in systems if isinstance(systems, list) else []:          # (other results key systems by label)
        hyps = s.get("hyps") or {}
        for name in list(hyps):
            if _set_name(name):
                yield name, f"systems[{s.get('key')}].hyps.{name}", hyps, (name,)
    for mname, m in (doc.get("models") or {}).items():                 # the older bench_accuracy layout
        if not isinstance(m, dict):
            continue
        for backend, systems in (m.get("systems") or {}).items():
            for method, entry in systems.items():
                for d in (entry.get("result") or {}).get("datasets") or []:
                    name = d.get("name", "")
                    if _set_name(name):
                        for u in d.get("utterances") or []:
                            yield name, f"models.{mname}.systems.{backend}.{method}.{name}", u, ("ref", "hyp")


def redact(doc: dict) -> dict:
    """Remove reference transcripts and hypotheses of the NOT_SHIPPED sets from a result document, in place;
    returns it. Idempotent."""
    removed: dict[str, str] = dict(doc.get("redacted") or {})
    for name, _, container, keys in list(_restricted_texts(doc)):
        for k in keys:
            if k in container:
                del container[k]
                removed[name] = NOT_SHIPPED[_set_name(name)]
    if removed:
        doc["redacted"] = removed
    return doc


def find_unredacted(doc: dict) -> list[str]:
    """Where a result document still carries transcripts or hypotheses of a NOT_SHIPPED set (empty when clean)."""
    return list(dict.fromkeys(where for _, where, container, keys in _restricted_texts(doc)
                              if any(k in container for k in keys)))
