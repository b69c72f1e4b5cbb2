"""TFLite flatbuffers (``.tflite``), read without tensorflow."""
