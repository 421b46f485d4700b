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


def redact(doc: dict) -> dict:
    """Remove reference transcripts and hypotheses of the NOT_SHIPPED sets from a result document, in place;
    returns it. Idempotent."""
    removed: dict[str, str] = dict(doc.get("redacted") or {})
    for name, block in (doc.get("utterances") or {}).items():          # tarq-grid-results
        hit = _set_name(name)
        if hit and "refs" in block:
            del block["refs"]
            removed[name] = NOT_SHIPPED[hit]
    for s in doc.get("systems") or []:
        for name in list((s.get("hyps") or {})):
            hit = _set_name(name)
            if hit:
                del s["hyps"][name]
                removed[name] = NOT_SHIPPED[hit]
    for m in (doc.get("models") or {}).values():                         # the older bench_accuracy layout
        for systems in (m.get("systems") or {}).values():
            for entry in systems.values():
                for d in (entry.get("result") or {}).get("datasets") or []:
                    hit = _set_name(d.get("name", ""))
                    if not hit:
                        continue
                    for u in d.get("utterances") or []:
                        u.pop("ref", None)
                        u.pop("hyp", None)
                    removed[d["name"]] = NOT_SHIPPED[hit]
    if removed:
        doc["redacted"] = removed
    return doc


def find_unredacted(doc: dict) -> list[str]:
    """Where a result document still carries transcripts or hypotheses of a NOT_SHIPPED set (empty when clean)."""
    found = []
    for name, block in (doc.get("utterances") or {}).items():
        if _set_name(name) and block.get("refs"):
            found.append(f"utterances.{name}.refs")
    for s in doc.get("systems") or []:
        for name, hyps in (s.get("hyps") or {}).items():
            if _set_name(name) and hyps:
                found.append(f"systems[{s.get('key')}].hyps.{name}")
    for mname, m in (doc.get("models") or {}).items():
        for backend, systems in (m.get("systems") or {}).items():
            for method, entry in systems.items():
                for d in (entry.get("result") or {}).get("datasets") or []:
                    if _set_name(d.get("name", "")) and any("ref" in u or "hyp" in u
                                                            for u in d.get("utterances") or []):
                        found.append(f"models.{mname}.systems.{backend}.{method}.{d['name']}")
    return found
