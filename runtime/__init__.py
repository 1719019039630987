"""cmhash.runtime: encode and search without PyTorch.

This package imports only numpy, Pillow, tokenizers and (optionally) onnxruntime/CuPy. It never
imports torch, cmhash.zoo or cmhash.export; tests/runtime/test_torch_free.py enforces that.
"""
