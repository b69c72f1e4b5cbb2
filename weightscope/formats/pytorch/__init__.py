"""PyTorch files: zip and legacy pickles, TorchScript, and live modules. ``reader`` is the
entry point; ``unpickler`` never runs code from a file."""
