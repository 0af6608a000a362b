"""python -m export: every zoo model to ONNX, self-describing, with its parity to PyTorch proven."""
