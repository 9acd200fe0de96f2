"""Demo-only inputs: espeak-ng rendered French prospecting calls with exact speech truth."""

from demo.calls import (
    DemoCall,
    DemoToolError,
    build_calls,
    per_second_truth,
    speech_ratio_truth,
)

__all__ = ["DemoCall", "DemoToolError", "build_calls", "per_second_truth", "speech_ratio_truth"]
