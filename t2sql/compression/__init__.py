"""Compression of a trained model: pruning, quantization and ONNX export, and the variants they make.

- :mod:`t2sql.compression.pruning`: global magnitude pruning and structured feed-forward pruning;
- :mod:`t2sql.compression.quantization`: PyTorch dynamic INT8;
- :mod:`t2sql.compression.onnx_export`: ONNX export and ONNX Runtime dynamic INT8;
- :mod:`t2sql.compression.variants`: the steps the compression flow runs, each returning a small dict;
- loading any of their outputs: :func:`t2sql.model_dir.load` (pruned formats are registered there).
"""
