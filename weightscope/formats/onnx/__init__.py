"""ONNX models, from files (walked at the protobuf wire level) or live ``ModelProto``s.
``reader`` is the entry point."""
