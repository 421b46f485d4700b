"""Quantization methods behind one registry: rtn, imatrix, gptq, rarebal, tarq, qep."""
from .base import LinearResult, QuantMethod
from .registry import available_methods, get_method, register_method

__all__ = ["LinearResult", "QuantMethod", "available_methods", "get_method", "register_method"]
