"""The prospect affect model: EmoDB features, training, LOSO evaluation, int8 export (ONNX, TFLite)."""
