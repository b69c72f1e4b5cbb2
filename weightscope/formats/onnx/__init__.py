"""ONNX models, from files (their protobuf decoded by weightscope's own wire reader) or live
``ModelProto``s. ``reader`` is the entry point."""
