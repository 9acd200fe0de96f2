"""Miroir: audio-free vocal posture metrics for call-centre floors."""

__version__ = "0.1.0"
