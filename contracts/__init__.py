"""What training, export and serving share, at the bottom of the import graph and free of torch.

The digit format and the MNIST-format image pipeline (`contracts.images`), the model card, the data
folder and MNIST's IDX files, the ONNX Runtime session factory and the model file it loads, Triton's
repository layout and config.pbtxt, the generated protobuf stubs, and the errors they raise. Nothing
here imports zoo, export, serve or torch (tests/test_import_direction.py checks it).
"""
