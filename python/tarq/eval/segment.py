"""Cut clips longer than Whisper's 30-s window at quiet points, so the torch backend transcribes all of them.

Whisper's encoder sees exactly 30 s; longer input would be truncated (and its words counted as deletions). We cut
such clips greedily: from the current start, the cut goes at the quietest 100-ms frame (lowest RMS) among the
frames that end between ``max_s - search_s`` and ``max_s`` seconds later, and the rest is cut the same way. The
pieces are transcribed independently and their texts joined with a space. This is simpler than Whisper's
timestamp-driven sequential long-form decoding and is used only for the few clips over 30 s (3 of the 551
asterisk prompts; none in the Austen sets).
"""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
FRAME = SAMPLE_RATE // 10   # 100 ms
SPLIT_VERSION = "split_long/v1(max_s=30,search_s=10,frame=100ms)"   # part of decode-cache keys: bump on change


def split_long(audio: np.ndarray, max_s: float = 30.0, search_s: float = 10.0) -> list[np.ndarray]:
    """Consecutive pieces of ``audio``, each at most ``max_s`` seconds, cut at low-energy 100-ms frames."""
    if not 0 < search_s < max_s:
        raise ValueError(f"need 0 < search_s < max_s (got search_s={search_s}, max_s={max_s})")
    max_n = int(max_s * SAMPLE_RATE)
    pieces, start = [], 0
    while len(audio) - start > max_n:
        lo = start + int((max_s - search_s) * SAMPLE_RATE)        # earliest cut
        frames = (start + max_n - lo) // FRAME
        ends = lo + FRAME * np.arange(1, frames + 1)              # candidate cut = end of each frame
        window = audio[lo:lo + FRAME * frames].astype(np.float64).reshape(frames, FRAME)
        rms = np.sqrt((window ** 2).mean(1))
        cut = int(ends[int(np.argmin(rms))] - FRAME // 2)         # middle of the quietest frame
        pieces.append(audio[start:cut])
        start = cut
    pieces.append(audio[start:])
    return pieces
