"""Per-campaign tuning of the agent's cues and fatigue tracking: a validated TOML file.

Every key has a default (justified in ``docs/cues.md``) and an allowed range. Loading refuses an
unknown section or key with its dotted name and the known ones, a wrong type with the expected type,
and an out-of-range value with the allowed range, so a supervisor's typo never silently falls back
to a default.

Example (``campaign.toml``)::

    [alerts]
    budget_per_hour = 12

    [too_fast]
    ratio_on = 1.25

    [monologue]
    on_s = 30
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miroir.files import read_regular


class CampaignError(ValueError):
    """A campaign file that cannot be used; the message names the key."""


def _r(default: Any, lo: float, hi: float, doc: str = "") -> Any:
    """A field with its allowed range ``lo..hi`` (inclusive)."""
    return field(default=default, metadata={"range": (lo, hi), "doc": doc})


@dataclass(frozen=True)
class AlertsConfig:
    """Anti-nagging rules shared by every cue."""

    budget_per_hour: int = _r(12, 0, 120)
    """At most this many cues raised per agent in any rolling hour (0: cues off)."""
    mute_after_s: float = _r(1.0, 0.1, 10.0)
    """Digital silence on the agent's channel for this long means the headset is muted."""
    hold_silence_s: float = _r(10.0, 2.0, 120.0)
    """A silent line (far channel under the silence level) with a silent agent this long is hold."""
    baseline_speech_s: float = _r(60.0, 10.0, 1800.0)
    """Seconds of the agent's speech (windows with voice) learned before baseline cues can fire."""


@dataclass(frozen=True)
class RateCue:
    """Too fast: the tempo over the window, the pace (:func:`edge.rate.pace`) and the spectral
    speed (:func:`edge.rate.spectral_speed`) each relative to the agent's own baseline, combined by
    :func:`edge.rate.tempo_ratio` (:class:`SlowCue`: too slow, the pace alone)."""

    enabled: bool = True
    ratio_on: float = _r(1.23, 1.0, 3.0)
    """Rate over the agent's baseline at which the cue may start."""
    ratio_off: float = _r(1.1, 1.0, 3.0)
    """Rate over baseline at which it may end (the hysteresis band lies between)."""
    band_syl_s: float = _r(8.5, 1.0, 15.0)
    """Campaign's absolute limit in syllables/s (upper for too fast, lower for too slow)."""
    window_s: float = _r(3.0, 2.0, 20.0)
    """The pace is measured over this many seconds of audio (the no-pause cue reads the pauses of
    the too-fast window, so this also sets when it can fire)."""
    min_on_s: float = _r(1.0, 0.0, 60.0)
    min_off_s: float = _r(4.0, 0.0, 120.0)
    cooldown_s: float = _r(60.0, 0.0, 3600.0)


@dataclass(frozen=True)
class SlowCue(RateCue):
    """Too slow: the ratios lie under the agent's own pace (1.0)."""

    ratio_on: float = _r(0.83, 0.3, 1.0)
    """Rate over the agent's baseline at which the cue may start."""
    ratio_off: float = _r(0.93, 0.3, 1.0)
    """Rate over baseline at which it may end (the hysteresis band lies between)."""
    band_syl_s: float = _r(2.5, 1.0, 15.0)
    """Campaign's absolute lower limit in syllables/s."""
    window_s: float = _r(8.0, 2.0, 20.0)
    """The pace is measured over this many seconds of audio."""
    min_on_s: float = _r(2.0, 0.0, 60.0)


@dataclass(frozen=True)
class MonologueCue:
    """The agent's current turn (pauses under the turn gap merged) is longer than ``on_s``."""

    enabled: bool = True
    on_s: float = _r(30.0, 5.0, 600.0)
    high_s: float = _r(60.0, 5.0, 1200.0)
    """From this long the cue is raised with severity ``high``."""
    cooldown_s: float = _r(30.0, 0.0, 3600.0)


@dataclass(frozen=True)
class NoPauseCue:
    """The agent has spoken for ``on_s`` with no pause or breath (200 ms to 2 s gaps).

    Each second reads the pauses of the ``too_fast`` window (``too_fast.window_s``)."""

    enabled: bool = True
    on_s: float = _r(20.0, 5.0, 300.0)
    speech_ratio: float = _r(0.8, 0.1, 1.0)
    """Share of those seconds the agent must have been speaking."""
    cooldown_s: float = _r(120.0, 0.0, 3600.0)


@dataclass(frozen=True)
class MonotoneCue:
    """Pitch range over the prosody window well under the agent's own baseline range."""

    enabled: bool = True
    ratio_on: float = _r(0.5, 0.05, 1.0)
    ratio_off: float = _r(0.7, 0.05, 1.5)
    min_on_s: float = _r(10.0, 0.0, 300.0)
    min_off_s: float = _r(5.0, 0.0, 300.0)
    cooldown_s: float = _r(180.0, 0.0, 3600.0)


@dataclass(frozen=True)
class TalkingOverCue:
    """The agent starts speaking over the prospect and keeps going, or takes the floor."""

    enabled: bool = True
    min_overlap_s: float = _r(1.0, 0.2, 10.0)
    """An agent-started overlap counts once it lasts this long (backchannels are shorter)."""
    show_s: float = _r(5.0, 1.0, 60.0)
    """The cue stays on this long after the last overlap that raised it."""
    cooldown_s: float = _r(20.0, 0.0, 3600.0)


@dataclass(frozen=True)
class SlowResponseCue:
    """The prospect stopped and nobody has spoken for ``on_s``."""

    enabled: bool = True
    on_s: float = _r(2.0, 0.5, 30.0)
    max_s: float = _r(10.0, 1.0, 120.0)
    """Longer silences are dead air (hang-up, hold): the cue ends."""
    cooldown_s: float = _r(20.0, 0.0, 3600.0)


@dataclass(frozen=True)
class LowEnergyCue:
    """The agent's loudness well under the agent's own baseline."""

    enabled: bool = True
    drop_db_on: float = _r(6.0, 1.0, 40.0)
    drop_db_off: float = _r(4.0, 0.0, 40.0)
    min_on_s: float = _r(10.0, 0.0, 300.0)
    min_off_s: float = _r(5.0, 0.0, 300.0)
    cooldown_s: float = _r(180.0, 0.0, 3600.0)


@dataclass(frozen=True)
class HesitatingCue:
    """The prospect hesitates: of the last ``responses`` answers, ``count`` came after a silence of
    ``latency_on_s`` or more, or held a filled pause ("euh", "um")."""

    enabled: bool = True
    latency_on_s: float = _r(1.5, 0.3, 10.0)
    """At most the longest silence still read as an answer's latency (10 s: later, it is a new
    exchange, ``edge.conversation.ConversationConfig.max_latency_s``)."""
    filled_pauses: bool = True
    """An answer holding a filled pause is hesitant too, whatever the silence before it."""
    responses: int = _r(3, 1, 20)
    count: int = _r(2, 1, 20)
    cooldown_s: float = _r(60.0, 0.0, 3600.0)


@dataclass(frozen=True)
class TenseCue:
    """The prospect's tension from the affect model (when the campaign enables it)."""

    enabled: bool = True
    tension_on: float = _r(0.7, 0.0, 1.0)
    tension_off: float = _r(0.5, 0.0, 1.0)
    min_on_s: float = _r(6.0, 0.0, 300.0)
    min_off_s: float = _r(6.0, 0.0, 300.0)
    cooldown_s: float = _r(60.0, 0.0, 3600.0)


@dataclass(frozen=True)
class AffectDisclosure:
    """The prospect affect model (arousal and tension), on boxes whose settings enable it."""

    disclosed: bool = False
    """The campaign's call script tells the prospect that an automated system estimates the tone
    of their voice (EU AI Act Art. 50(3)): the model runs only then."""


@dataclass(frozen=True)
class FatigueConfig:
    """Fatigue and vocal load: drift of the agent's voice against the agent's shift baseline."""

    enabled: bool = True
    baseline_speech_s: float = _r(300.0, 30.0, 7200.0)
    """Seconds of voiced prosody windows learned as the shift's baseline."""
    track_speech_s: float = _r(600.0, 30.0, 7200.0)
    """The current state is the mean of this many seconds of voiced windows."""
    drift_full: float = _r(8.0, 0.5, 50.0)
    """Combined drift (in standard errors) at which the index reaches 100."""
    drift_zero: float = _r(1.0, 0.0, 50.0)
    """Combined drift at or under which the index is 0 (measurement noise)."""
    dose_full_min: float = _r(120.0, 1.0, 1440.0)
    """Minutes of phonation in the shift that count as one unit of drift (vocal dose)."""
    break_on: float = _r(60.0, 0.0, 100.0)
    break_off: float = _r(40.0, 0.0, 100.0)
    break_min_s: float = _r(120.0, 0.0, 3600.0)
    """The index stays at or over ``break_on`` this long before a break is suggested."""
    new_shift_idle_min: float = _r(180.0, 10.0, 2880.0)
    """After this long with nobody speaking on either channel, the next speech starts a new shift:
    vocal dose, fatigue tracking, the break suggestion and the cue budget start over (the learned
    baselines are kept, as a restart loads them)."""


@dataclass(frozen=True)
class CampaignConfig:
    """Everything a campaign may tune; every section optional."""

    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    too_fast: RateCue = field(default_factory=RateCue)
    too_slow: SlowCue = field(default_factory=SlowCue)
    monologue: MonologueCue = field(default_factory=MonologueCue)
    no_pause: NoPauseCue = field(default_factory=NoPauseCue)
    monotone: MonotoneCue = field(default_factory=MonotoneCue)
    talking_over: TalkingOverCue = field(default_factory=TalkingOverCue)
    slow_response: SlowResponseCue = field(default_factory=SlowResponseCue)
    low_energy: LowEnergyCue = field(default_factory=LowEnergyCue)
    prospect_hesitating: HesitatingCue = field(default_factory=HesitatingCue)
    prospect_tense: TenseCue = field(default_factory=TenseCue)
    affect: AffectDisclosure = field(default_factory=AffectDisclosure)
    fatigue: FatigueConfig = field(default_factory=FatigueConfig)

    def __post_init__(self) -> None:
        _check_pairs(self)


_PAIRS = (  # (section, low key, high key): low must stay under high
    ("too_fast", "ratio_off", "ratio_on"), ("too_slow", "ratio_on", "ratio_off"),
    ("monotone", "ratio_on", "ratio_off"), ("low_energy", "drop_db_off", "drop_db_on"),
    ("prospect_tense", "tension_off", "tension_on"), ("fatigue", "break_off", "break_on"),
    ("fatigue", "drift_zero", "drift_full"), ("monologue", "on_s", "high_s"),
    ("slow_response", "on_s", "max_s"), ("prospect_hesitating", "count", "responses"),
)


def _check_pairs(cfg: CampaignConfig) -> None:
    for section, lo, hi in _PAIRS:
        sec = getattr(cfg, section)
        a, b = getattr(sec, lo), getattr(sec, hi)
        strict = section not in ("prospect_hesitating",)
        if a > b or (strict and a == b):
            rel = "<" if strict else "<="
            raise CampaignError(f"{section}.{lo} ({a}) must be {rel} {section}.{hi} ({b})")
    hold_s = cfg.alerts.hold_silence_s
    for key in ("on_s", "max_s"):  # a silent line and a silent agent past hold_silence_s is a hold
        value = getattr(cfg.slow_response, key)
        if value > hold_s or (key == "on_s" and value == hold_s):
            raise CampaignError(f"slow_response.{key} ({value}) must be {'<' if key == 'on_s' else '<='} "
                                f"alerts.hold_silence_s ({hold_s}): past it the silence is a hold, "
                                "and the cue is held back")
    if cfg.too_slow.band_syl_s >= cfg.too_fast.band_syl_s:
        raise CampaignError(f"too_slow.band_syl_s ({cfg.too_slow.band_syl_s}) must be < "
                            f"too_fast.band_syl_s ({cfg.too_fast.band_syl_s})")


def _value(key: str, f: dataclasses.Field[Any], hint: Any, value: Any) -> Any:
    """Check one TOML value against its field's type and range; raise naming ``key``."""
    if hint is bool:
        if type(value) is not bool:
            raise CampaignError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int and (type(value) is not int):
        raise CampaignError(f"{key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CampaignError(f"{key}: expected a number, got {value!r}")
        value = float(value)
    lo, hi = f.metadata.get("range", (None, None))
    if lo is not None and not lo <= value <= hi:
        raise CampaignError(f"{key} = {value!r} is outside the allowed range {lo:g}..{hi:g}")
    return value


def from_mapping(data: dict[str, Any], default: CampaignConfig | None = None) -> CampaignConfig:
    """Build a campaign config from a parsed TOML mapping, refusing anything unknown or out of range.

    Args:
        data: sections (tables) of keys; missing sections and keys keep ``default``'s values.
        default: the values to start from (the built-in defaults when None).

    Returns:
        The validated :class:`CampaignConfig`.
    """
    base = default or CampaignConfig()
    sections = {f.name: f for f in dataclasses.fields(CampaignConfig)}
    if not isinstance(data, dict):
        raise CampaignError("a campaign file is a TOML document of sections")
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise CampaignError(f"unknown section(s): {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(sections))})")
    built: dict[str, Any] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise CampaignError(f"{name}: expected a [{name}] section, got {table!r}")
        current = getattr(base, name)
        cls = type(current)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        bad = sorted(set(table) - set(fields))
        if bad:
            raise CampaignError(f"unknown key(s) in [{name}]: {', '.join(f'{name}.{b}' for b in bad)} "
                                f"(known: {', '.join(sorted(fields))})")
        values = {k: _value(f"{name}.{k}", fields[k], hints[k], v) for k, v in table.items()}
        built[name] = dataclasses.replace(current, **values)
    return dataclasses.replace(base, **built)


def load(path: Path) -> CampaignConfig:
    """Load and validate a campaign TOML file."""
    return load_text(path)[0]


def load_text(path: Path) -> tuple[CampaignConfig, bytes]:
    """Load and validate a campaign TOML file; return it with the bytes it was read from."""
    try:
        raw = read_regular(path)
        data = tomllib.loads(raw.decode("utf-8-sig"))  # a BOM (Windows editors) is no error
    except FileNotFoundError:
        raise CampaignError(f"{path}: no such campaign file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CampaignError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:  # tomllib recurses into nested arrays and tables
        raise CampaignError(f"{path}: not valid TOML (nested too deep)") from None
    except OSError as exc:  # a directory, no permission
        raise CampaignError(f"{path}: cannot read the campaign file ({exc.strerror})") from None
    if not raw.decode("utf-8-sig").strip():  # comments alone are a choice; nothing at all is not
        raise CampaignError(f"{path}: the campaign file is empty: give its sections, or remove "
                            "campaign_file from the box's settings to run the defaults")
    try:
        return from_mapping(data), raw
    except CampaignError as exc:
        raise CampaignError(f"{path}: {exc}") from None


def defaults_toml() -> str:
    """The built-in defaults as a commented TOML document (every section and key)."""
    cfg = CampaignConfig()
    lines = ["# Miroir campaign settings: every key optional; see docs/cues.md"]
    for sec in dataclasses.fields(CampaignConfig):
        lines.append(f"\n[{sec.name}]")
        obj = getattr(cfg, sec.name)
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            text = ("true" if v else "false") if isinstance(v, bool) else repr(v)
            rng = f.metadata.get("range")
            lines.append(f"{f.name} = {text}" + (f"  # {rng[0]:g}..{rng[1]:g}" if rng else ""))
    return "\n".join(lines) + "\n"
