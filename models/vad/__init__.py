"""Silero VAD for LiteRT: the pinned ONNX file's 16 kHz weights, converted to a TFLite file."""
