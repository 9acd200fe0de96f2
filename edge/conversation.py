"""Conversation state from the two channels' speech states: talk state and rolling speech shares."""

from __future__ import annotations

from dataclasses import dataclass


def talk_state(near_speaking: bool, far_speaking: bool) -> str:
    """Who is talking: ``agent``, ``prospect``, ``overlap`` or ``silence``."""
    if near_speaking and far_speaking:
        return "overlap"
    if near_speaking:
        return "agent"
    if far_speaking:
        return "prospect"
    return "silence"


@dataclass(frozen=True)
class WindowMetrics:
    """Speech shares of one metrics window."""

    t_start: float
    """Audio time of the window's first frame, in seconds."""
    window_s: float
    """Audio covered by the window, in seconds."""
    near_speech_ratio: float
    """Share of the window in which the agent spoke, 0..1."""
    far_speech_ratio: float
    """Share of the window in which the far end spoke, 0..1."""
    near_talking: bool
    """Whether the agent was speaking at the window's end."""
    far_talking: bool
    """Whether the far end was speaking at the window's end."""
    talk_state: str
    """Talk state at the window's end."""


class MetricsWindow:
    """Accumulates per-frame speech states into windows aligned on multiples of ``window_s``.

    A frame that straddles a window boundary is split between the two windows, so every window
    covers exactly ``window_s`` of audio.
    """

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self.reset()

    def reset(self) -> None:
        """Drop the window being accumulated."""
        self._t_start: float | None = None
        self._near_s = 0.0
        self._far_s = 0.0

    def __call__(self, start_s: float, duration_s: float, near: bool, far: bool
                 ) -> WindowMetrics | None:
        """Add one frame's states; return the window's metrics when the frame completes it.

        Args:
            start_s: the frame's start time, seconds.
            duration_s: the frame's length, seconds (shorter than ``window_s``).
            near: the agent's speech state during the frame.
            far: the far end's speech state during the frame.

        Returns:
            The completed window, or ``None``.
        """
        if self._t_start is None:
            self._t_start = start_s // self.window_s * self.window_s
        end_s = self._t_start + self.window_s
        inside_s = min(start_s + duration_s, end_s) - start_s
        self._near_s += inside_s * near
        self._far_s += inside_s * far
        if start_s + duration_s < end_s - 1e-9:
            return None
        done = WindowMetrics(
            t_start=round(self._t_start, 3),
            window_s=self.window_s,
            near_speech_ratio=round(min(1.0, self._near_s / self.window_s), 3),
            far_speech_ratio=round(min(1.0, self._far_s / self.window_s), 3),
            near_talking=near,
            far_talking=far,
            talk_state=talk_state(near, far),
        )
        rest_s = duration_s - inside_s
        self._t_start = end_s
        self._near_s = rest_s * near
        self._far_s = rest_s * far
        return done
