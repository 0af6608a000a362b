"""Images into the digit format: decoding with its limits, the formats accepted, MNIST-format preprocessing."""
