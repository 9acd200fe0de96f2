"""The whole edge pipeline against fp32 Silero VAD alone, on ten minutes of real two-party audio.

Audio: two AMI headsets (real talkers in one meeting) as agent and prospect. Each headset's
silences longer than 0.5 s are shortened to 0.5 s so that each channel is at least half speech
(checked), as on a busy call, then each is looped to ``seconds`` (about 24 s and 27 s of audio:
the two loops drift apart, so the turn taking is not a real conversation; the cost is what is
measured). The pipeline runs the box's default model runtime (LiteRT); the reference is the published
fp32 ONNX file on ONNX Runtime, one channel per call. Both run on one thread in this process, alternately,
``repeats`` times; medians of CPU time are reported, counting only the calls under test (making
the looped blocks is the bench's own cost). The pipeline's total is timed without its stage clocks
(as the box runs it); the per-stage figures split that total by each stage's median share of a
profiled run of its own. ``rss_mb_peak`` is the whole process's peak,
preparation included: an upper bound on the pipeline's.

With ``prospect_alone`` (``--prospect-alone``) the audio is instead a call where the prospect
speaks alone: the prospect picks up (the first of its clips), the agent answers with one neutral
EmoDB sentence (speaker 03) over a quiet -65 dBFS floor, and the prospect then talks on: every 10th
EmoDB clip in a row (42 clips, 84 s, all 8 speakers), each turn 0.5 s after the other's, looped
(90.5 s in all). With ``--affect`` that is where the affect model runs most: in a live call, once
the prospect has answered the agent.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from bench.common import HEADSETS, single_thread_env
from edge.frames import RATE_HZ

log = logging.getLogger(__name__)

MAX_SILENCE_S = 0.5
"""Each headset's silences are cut to this, so that each channel is at least half speech, as on a
busy call (the module's docstring)."""


def _segments(blocks: Iterable[np.ndarray], model: Any) -> dict[str, list[list[float]]]:
    """Each channel's speech segments ``[start_s, end_s]`` from the pipeline's gates (no summary,
    and block by block: the preparation should not weigh on the process's peak memory more than
    the run)."""
    from edge.pipeline import Pipeline

    pipe = Pipeline(model, trace=True)
    for block in blocks:
        pipe(block)
    pipe.finish()
    assert pipe.trace is not None
    return pipe.trace.segments


def _busy_channel(samples: np.ndarray, model: Any) -> np.ndarray:
    """Shorten the silences (per Silero's own segments) of one headset to ``MAX_SILENCE_S``."""
    segments = _segments([np.stack([samples, np.zeros_like(samples)])], model)["near"]
    keep = int(MAX_SILENCE_S * RATE_HZ)
    pieces, cursor = [], 0
    for start_s, end_s in segments:
        start, end = int(start_s * RATE_HZ), int(end_s * RATE_HZ)
        pieces.append(samples[cursor:start][:keep])
        pieces.append(samples[start:end])
        cursor = end
    pieces.append(samples[cursor:][:keep])
    return np.concatenate(pieces)


class ShortAudioError(ValueError):
    """The bench's audio is too short to be at least half speech on each channel."""


class TwoPartyAudio:
    """Near = headset 0, far = headset 1, each busy, looped: blocks made on demand (no 10-minute
    array in memory)."""

    def __init__(self, model: Any, seconds: float) -> None:
        from edge.source import read_wav

        self.n = int(seconds * RATE_HZ)
        self.channels = [_busy_channel(read_wav(HEADSETS / name, notice=False).samples, model)
                         for name in ("source0.wav", "source1.wav")]

    @property
    def checked(self) -> tuple[str, ...]:
        """The channels that must be at least half speech."""
        return ("near", "far")

    def block(self, start: int, size: int) -> np.ndarray:
        """Samples ``start`` to ``start + size`` of both channels, (2, size) float32."""
        size = min(size, self.n - start)
        return np.stack([np.take(ch, np.arange(start, start + size), mode="wrap")
                         for ch in self.channels]).astype(np.float32)

    def blocks(self, size: int, stop: int | None = None) -> Iterator[np.ndarray]:
        """Every block of ``size`` samples in order, up to sample ``stop`` (the end by default)."""
        for start in range(0, self.n if stop is None else min(stop, self.n), size):
            yield self.block(start, size)


PROSPECT_CLIP_STEP = 10
"""Every this many-th EmoDB clip makes the prospect's side of :class:`ProspectAlone`."""
QUIET_FLOOR_DBFS = -65.0
"""Noise floor of the agent's channel around the greeting: the conversation calls' -65 dBFS floor."""


AGENT_GREETING = "03a01Nc.wav"
"""The agent's one sentence in :class:`ProspectAlone` (EmoDB speaker 03, neutral)."""


class ProspectAlone(TwoPartyAudio):
    """Far = every :data:`PROSPECT_CLIP_STEP`-th EmoDB clip in a row (real speech, its own pauses),
    the agent's greeting (:data:`AGENT_GREETING`, near, over a quiet floor) after the first: the
    prospect talks and the agent listens, looped."""

    def __init__(self, model: Any, seconds: float) -> None:
        from bench.common import SHARED
        from edge.source import read_wav

        self.n = int(seconds * RATE_HZ)
        emodb = SHARED / "emodb" / "wav"
        greeting = read_wav(emodb / AGENT_GREETING, notice=False).samples
        clips = [read_wav(w, notice=False).samples
                 for w in sorted(emodb.glob("*.wav"))[::PROSPECT_CLIP_STEP]]
        gap = np.zeros(RATE_HZ // 2, dtype=np.float32)
        at = len(clips[0]) + len(gap)  # the agent answers the prospect's first clip
        far = np.concatenate([clips[0], gap, np.zeros_like(greeting), gap, *clips[1:]])
        rng = np.random.default_rng(0)
        near = rng.normal(0.0, 10 ** (QUIET_FLOOR_DBFS / 20), len(far)).astype(np.float32)
        near[at:at + len(greeting)] += greeting
        self.channels = [near, far]

    @property
    def checked(self) -> tuple[str, ...]:
        """Only the prospect speaks."""
        return ("far",)


def reference(model: Any, audio: TwoPartyAudio, block: int) -> float:
    """fp32 Silero alone, one recurrent VAD per channel (one inference per channel per frame).

    Returns:
        CPU seconds spent framing and in the VAD (making the blocks is the bench's own cost).
    """
    from edge.frames import Framer
    from edge.vad import SileroVad

    framer = Framer()
    vads = [SileroVad(model, channels=1), SileroVad(model, channels=1)]
    spent = 0.0
    for chunk in audio.blocks(block):
        t0 = time.process_time()
        for frame in framer(chunk):
            for i, vad in enumerate(vads):
                vad(type(frame)(frame.samples[i:i + 1], frame.rate_hz, frame.start_s, frame.index))
        spent += time.process_time() - t0
    return spent


def _pipeline(model: Any, affect: bool, profile: bool = False) -> Any:
    """The box's pipeline (with ``profile``, each stage's CPU time kept); with ``affect``, the
    prospect affect stage on (a campaign that discloses it, as a box whose settings enable it)."""
    from edge.pipeline import Pipeline

    if not affect:
        return Pipeline(model, profile=profile)
    from edge.affect import AffectConfig, AffectModel, AffectStage
    from edge.campaign import from_mapping

    config = AffectConfig(enabled=True)
    return Pipeline(model, profile=profile, affect=AffectStage(AffectModel(config.backend), config),
                    campaign=from_mapping({"affect": {"disclosed": True}}))


def _timed(pipe: Any, audio: TwoPartyAudio, block: int) -> float:
    """CPU seconds ``pipe`` spends on every block of ``audio`` (making the blocks not counted)."""
    spent = 0.0
    for chunk in audio.blocks(block):
        t0 = time.process_time()
        pipe(chunk)
        spent += time.process_time() - t0
    return spent


def run(seconds: float = 600.0, repeats: int = 3, block: int = 1024,
        affect: bool = False, prospect_alone: bool = False) -> dict[str, Any]:
    """Measure the pipeline (with the prospect affect stage if ``affect``) and the reference, on
    the two headsets or (``prospect_alone``) on :class:`ProspectAlone`; return the JSON-ready
    figures. Raises :class:`ShortAudioError` if ``seconds`` is too short for the audio to be at
    least half speech on each channel that speaks."""
    single_thread_env()
    from edge.pipeline import load_vad_model

    model = load_vad_model()  # the box's default runtime
    fp32 = load_vad_model("onnx")  # the reference: the published file on ONNX Runtime
    audio = (ProspectAlone if prospect_alone else TwoPartyAudio)(fp32, seconds)
    audio_s = audio.n / RATE_HZ
    check_n = min(audio.n, 120 * RATE_HZ)
    check_s = check_n / RATE_HZ
    segments = _segments(audio.blocks(block, check_n), model)
    speech = {f"{ch}_speech_ratio": round(sum(e - s for s, e in segs) / check_s, 4)
              for ch, segs in segments.items()}
    if min(speech[f"{ch}_speech_ratio"] for ch in audio.checked) < 0.5:
        where = "each channel" if len(audio.checked) == 2 else "the prospect's channel"
        raise ShortAudioError(f"the bench's audio is not at least half speech on {where} over its "
                              f"first {check_s:g} s ({speech}): give more seconds (15 or more)")
    pipe_s, ref_s, stages = [], [], []
    log.info("bench edge: %g s of audio, %d run(s) of each side (VAD alone, the pipeline, the "
             "pipeline with its stages timed)", audio_s, repeats)
    for done in range(1, repeats + 1):
        ref_s.append(reference(fp32, audio, block))
        pipe = _pipeline(model, affect)
        pipe_s.append(_timed(pipe, audio, block))
        # the stages in a run of their own: their clocks (about 10 a frame) would add to the total
        profiled = _pipeline(model, affect, profile=True)
        profiled_s = _timed(profiled, audio, block)
        assert profiled.stage_s is not None
        stages.append({k: v / profiled_s for k, v in profiled.stage_s.items()})
        log.info("bench edge: run %d of %d done (RTF %.5f pipeline, %.5f VAD alone)", done,
                 repeats, pipe_s[-1] / audio_s, ref_s[-1] / audio_s)
    rtf_pipeline = statistics.median(pipe_s) / audio_s
    rtf_ref = statistics.median(ref_s) / audio_s
    # each stage's median share of its profiled run, applied to the unprofiled total
    stage_ms = {k: round(1000 * rtf_pipeline * statistics.median(s[k] for s in stages), 3)
                for k in stages[0]}
    return {
        "audio_s": audio_s,
        "repeats": repeats,
        "affect": affect,
        "prospect_alone": prospect_alone,
        "near_speech_ratio": speech["near_speech_ratio"],
        "far_speech_ratio": speech["far_speech_ratio"],
        "rtf_pipeline": round(rtf_pipeline, 5),
        "rtf_vad_only": round(rtf_ref, 5),
        "ratio": round(rtf_pipeline / rtf_ref, 3),
        "rss_mb_peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "stage_ms_per_audio_s": stage_ms,
        # how many 1 s hops the affect model ran on, and why it skipped the others (last run)
        **({"affect_windows": dataclasses.asdict(pipe.affect.stats)} if affect else {}),
        "budget": {"rtf_pipeline": 0.02, "ratio": 2.5, "rss_mb_peak": 150},
    }


if __name__ == "__main__":  # the options of `miroir bench edge` (--help lists them)
    from miroir.cli import main

    raise SystemExit(main(["bench", "edge", *sys.argv[1:]]))
