"""Demo-only inputs: espeak-ng rendered French prospecting calls with exact speech truth."""

from demo.calls import (
    DemoCall,
    DemoToolError,
    build_calls,
    speech_ratio_truth,
)

__all__ = ["DemoCall", "DemoToolError", "build_calls", "speech_ratio_truth"]
