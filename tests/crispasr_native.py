"""ctypes access to libcrispasr's per-model C APIs (the PyPI ``crispasr`` wheel), used as a test oracle.

Only the runtime's own entry points are called (src/qwen3_asr.h, src/moonshine.h of CrispStrobe/CrispASR); nothing
here shares code with tarq's writers. No tests here.
"""
from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager

import numpy as np
import pytest

os.environ.setdefault("GGML_NO_BACKTRACE", "1")   # a ggml assert must fail the test, not hang

_F = ctypes.POINTER(ctypes.c_float)
_I32 = ctypes.POINTER(ctypes.c_int32)
_INT = ctypes.POINTER(ctypes.c_int)


def library():
    binding = pytest.importorskip("crispasr._binding")
    lib = ctypes.CDLL(binding._find_lib())
    lib.free.argtypes = [ctypes.c_void_p]
    return lib


class _Qwen3Params(ctypes.Structure):
    _fields_ = [("n_threads", ctypes.c_int), ("verbosity", ctypes.c_int), ("use_gpu", ctypes.c_bool),
                ("flash_attn", ctypes.c_bool)]


def _take(lib, ptr, shape) -> np.ndarray:
    if not ptr:
        raise RuntimeError("libcrispasr returned NULL")
    out = np.ctypeslib.as_array(ptr, shape=shape).copy()
    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]
    libc.free(ctypes.cast(ptr, ctypes.c_void_p))
    return out


class Qwen3Asr:
    """qwen3_asr_* functions on one loaded GGUF."""

    def __init__(self, path, threads: int = 1):
        lib = self.lib = library()
        lib.qwen3_asr_context_default_params.restype = _Qwen3Params
        lib.qwen3_asr_init_from_file.restype = ctypes.c_void_p
        lib.qwen3_asr_init_from_file.argtypes = [ctypes.c_char_p, _Qwen3Params]
        lib.qwen3_asr_free.argtypes = [ctypes.c_void_p]
        for fn in ("qwen3_asr_embed_tokens", "qwen3_asr_run_llm", "qwen3_asr_run_encoder", "qwen3_asr_compute_mel",
                   "qwen3_asr_run_llm_from_embeds"):
            getattr(lib, fn).restype = _F
        lib.qwen3_asr_embed_tokens.argtypes = [ctypes.c_void_p, _I32, ctypes.c_int]
        lib.qwen3_asr_run_llm.argtypes = [ctypes.c_void_p, _I32, ctypes.c_int, _INT, _INT]
        lib.qwen3_asr_run_llm_from_embeds.argtypes = [ctypes.c_void_p, _F, ctypes.c_int, _INT, _INT]
        lib.qwen3_asr_run_encoder.argtypes = [ctypes.c_void_p, _F, ctypes.c_int, ctypes.c_int, _INT, _INT]
        lib.qwen3_asr_compute_mel.argtypes = [ctypes.c_void_p, _F, ctypes.c_int, _INT, _INT]
        p = lib.qwen3_asr_context_default_params()
        p.n_threads, p.use_gpu, p.verbosity = threads, False, 0
        self.ctx = lib.qwen3_asr_init_from_file(str(path).encode(), p)
        if not self.ctx:
            raise RuntimeError(f"{path}: qwen3_asr_init_from_file failed")

    def close(self):
        if self.ctx:
            self.lib.qwen3_asr_free(self.ctx)
            self.ctx = None

    def embed_tokens(self, ids, d: int) -> np.ndarray:
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        return _take(self.lib, self.lib.qwen3_asr_embed_tokens(self.ctx, ids.ctypes.data_as(_I32), len(ids)),
                     (len(ids), d))

    def run_llm(self, ids) -> np.ndarray:
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        n, v = ctypes.c_int(), ctypes.c_int()
        ptr = self.lib.qwen3_asr_run_llm(self.ctx, ids.ctypes.data_as(_I32), len(ids), ctypes.byref(n), ctypes.byref(v))
        return _take(self.lib, ptr, (len(ids), v.value))

    def run_llm_from_embeds(self, embeds: np.ndarray) -> np.ndarray:
        e = np.ascontiguousarray(embeds, dtype=np.float32)
        n, v = ctypes.c_int(), ctypes.c_int()
        ptr = self.lib.qwen3_asr_run_llm_from_embeds(self.ctx, e.ctypes.data_as(_F), e.shape[0], ctypes.byref(n),
                                                     ctypes.byref(v))
        return _take(self.lib, ptr, (e.shape[0], v.value))

    def run_encoder(self, mel: np.ndarray) -> np.ndarray:
        mel = np.ascontiguousarray(mel, dtype=np.float32)
        n, d = ctypes.c_int(), ctypes.c_int()
        ptr = self.lib.qwen3_asr_run_encoder(self.ctx, mel.ctypes.data_as(_F), mel.shape[0], mel.shape[1],
                                             ctypes.byref(n), ctypes.byref(d))
        if not ptr:
            raise RuntimeError("qwen3_asr_run_encoder failed")
        return _take(self.lib, ptr, (n.value, d.value))

    def compute_mel(self, audio: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(audio, dtype=np.float32)
        m, t = ctypes.c_int(), ctypes.c_int()
        ptr = self.lib.qwen3_asr_compute_mel(self.ctx, a.ctypes.data_as(_F), len(a), ctypes.byref(m), ctypes.byref(t))
        return _take(self.lib, ptr, (m.value, t.value))


class _MoonshineResult(ctypes.Structure):
    _fields_ = [("text", ctypes.c_char_p), ("token_ids", ctypes.POINTER(ctypes.c_int)),
                ("token_probs", ctypes.POINTER(ctypes.c_float)), ("n_tokens", ctypes.c_int)]


class Moonshine:
    """moonshine_* functions on one loaded GGUF (tokenizer.bin beside it)."""

    def __init__(self, path, threads: int = 1):
        lib = self.lib = library()
        lib.moonshine_init.restype = ctypes.c_void_p
        lib.moonshine_init.argtypes = [ctypes.c_char_p]
        lib.moonshine_free.argtypes = [ctypes.c_void_p]
        lib.moonshine_set_n_threads.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.moonshine_set_max_new_tokens.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.moonshine_encode.argtypes = [ctypes.c_void_p, _F, ctypes.c_int, ctypes.POINTER(_F), _INT, _INT]
        lib.moonshine_transcribe_with_probs.restype = ctypes.POINTER(_MoonshineResult)
        lib.moonshine_transcribe_with_probs.argtypes = [ctypes.c_void_p, _F, ctypes.c_int]
        lib.moonshine_result_free.argtypes = [ctypes.POINTER(_MoonshineResult)]
        self.ctx = lib.moonshine_init(str(path).encode())
        if not self.ctx:
            raise RuntimeError(f"{path}: moonshine_init failed")
        lib.moonshine_set_n_threads(self.ctx, threads)

    def close(self):
        if self.ctx:
            self.lib.moonshine_free(self.ctx)
            self.ctx = None

    def encode(self, audio: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(audio, dtype=np.float32)
        out, n, d = _F(), ctypes.c_int(), ctypes.c_int()
        rc = self.lib.moonshine_encode(self.ctx, a.ctypes.data_as(_F), len(a), ctypes.byref(out), ctypes.byref(n),
                                       ctypes.byref(d))
        if rc != 0:
            raise RuntimeError(f"moonshine_encode returned {rc}")
        return _take(self.lib, out, (n.value, d.value))

    def transcribe_with_probs(self, audio: np.ndarray, max_new_tokens: int) -> tuple[str, list[int], list[float]]:
        a = np.ascontiguousarray(audio, dtype=np.float32)
        self.lib.moonshine_set_max_new_tokens(self.ctx, max_new_tokens)
        r = self.lib.moonshine_transcribe_with_probs(self.ctx, a.ctypes.data_as(_F), len(a))
        if not r:
            raise RuntimeError("moonshine_transcribe_with_probs failed")
        c = r.contents
        out = ((c.text or b"").decode("utf-8", "replace"), [c.token_ids[i] for i in range(c.n_tokens)],
               [c.token_probs[i] for i in range(c.n_tokens)])
        self.lib.moonshine_result_free(r)
        return out


@contextmanager
def opened(cls, path, **kw):
    obj = cls(path, **kw)
    try:
        yield obj
    finally:
        obj.close()
