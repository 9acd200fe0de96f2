"""G.711 WAVs (A-law, mu-law), as phone systems record calls: decoded as sox decodes them, and
`miroir analyze` gives the same figures as for the same file converted to PCM by sox first."""

import json
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
EMODB = SHARED / "emodb" / "wav"
LAWS = {"a-law": 6, "mu-law": 7}
"""sox's name of each law -> its WAV format tag."""


def miroir(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "miroir", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def _sox(*args: str | Path) -> None:
    subprocess.run(["sox", "-V1", *map(str, args)], check=True, timeout=60)


def _clips(speaker: str, n: int) -> list[str]:
    """The first ``n`` EmoDB clips (2 s each) of one speaker."""
    return [p.name for p in sorted(EMODB.glob(f"{speaker}*.wav"))[:n]]


def _call(tmp_path: Path, name: str, clips: list[str], law: str, channels: int = 1) -> Path:
    """Real EmoDB speech joined into one 8 kHz G.711 WAV, as a phone system records it (sox, no
    dither: a codec adds none)."""
    path = tmp_path / f"{name}.wav"
    _sox("-D", *(EMODB / c for c in clips), "-r", "8000", "-c", str(channels), "-e", law, path)
    return path


def _pcm16_by_sox(src: Path, dest: Path) -> Path:
    """``src`` decoded by sox to 16-bit PCM (the rate and channels kept)."""
    _sox("-D", src, "-e", "signed-integer", "-b", "16", dest)
    return dest


def _int16(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wf:
        return np.frombuffer(wf.readframes(wf.getnframes()), dtype="<i2")


def _data_chunk(path: Path) -> bytes:
    """The bytes of a WAV file's data chunk, found by walking its RIFF chunks."""
    data = path.read_bytes()
    at = 12
    while data[at:at + 4] != b"data":
        at += 8 + struct.unpack_from("<I", data, at + 4)[0]
    return data[at + 8:at + 8 + struct.unpack_from("<I", data, at + 4)[0]]


def _extensible(path: Path, dest: Path, tag: int) -> Path:
    """``path`` (a plain 8-bit G.711 WAV as sox writes it) rewritten in the extensible format:
    format tag 0xFFFE, the law as the subformat GUID, the same fact and data chunks."""
    data = path.read_bytes()
    assert data[12:16] == b"fmt " and data[20:22] == struct.pack("<H", tag)
    size = struct.unpack_from("<I", data, 16)[0]
    channels, rate_hz, byte_rate, align, bits = struct.unpack_from("<HIIHH", data, 22)
    fmt = (struct.pack("<HHIIHH", 0xFFFE, channels, rate_hz, byte_rate, align, bits)
           + struct.pack("<HHI", 22, bits, 4)
           + struct.pack("<H", tag) + bytes.fromhex("000000001000800000aa00389b71"))
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + data[20 + size:]
    dest.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return dest


@pytest.mark.parametrize("law", LAWS)
def test_every_code_decodes_to_the_value_sox_gives_it(tmp_path, law):
    """All 256 codes of each law decode to sox's 16-bit value, bit for bit."""
    from edge.source import G711_PCM16

    codes = tmp_path / "codes.raw"
    codes.write_bytes(bytes(range(256)))
    out = subprocess.run(["sox", "-V1", "-t", "raw", "-r", "8000", "-c", "1", "-e", law, "-b", "8",
                          str(codes), "-t", "raw", "-e", "signed-integer", "-b", "16", "-L", "-"],
                         capture_output=True, check=True, timeout=60).stdout
    want = np.frombuffer(out, dtype="<i2")
    table = G711_PCM16[LAWS[law]]
    assert table.dtype == np.int16 and len(want) == 256
    assert np.array_equal(table, want), np.flatnonzero(table != want)


@pytest.mark.parametrize("law", LAWS)
def test_real_speech_in_g711_reads_as_sox_decodes_it(tmp_path, law):
    """Eight EmoDB speakers' speech encoded by sox to 8 kHz G.711: each sample decodes to the int16
    sox decodes it to, and the file reads (at 16 kHz, through the same resampler) as the same file
    converted to PCM by sox first; the extensible format (the law as its subformat) alike. The
    file was refused ("convert them first")."""
    from edge.source import G711_PCM16, read_wav

    clips = [_clips(speaker, 1)[0] for speaker in ("03", "08", "09", "10", "12", "13", "15", "16")]
    path = _call(tmp_path, "call", clips, law)
    pcm = _pcm16_by_sox(path, tmp_path / "pcm.wav")
    codes = np.frombuffer(_data_chunk(path), dtype=np.uint8)
    want = _int16(pcm)
    assert len(codes) == len(want) == 8 * 2 * 8000
    assert np.array_equal(G711_PCM16[LAWS[law]][codes], want)
    got = read_wav(path, notice=False)
    assert got.source_rate_hz == 8000 and got.rate_hz == 16000
    assert np.array_equal(got.samples, read_wav(pcm, notice=False).samples)
    ext = _extensible(path, tmp_path / "extensible.wav", LAWS[law])
    assert np.array_equal(read_wav(ext, notice=False).samples, got.samples)


def test_analyze_gives_a_g711_call_the_figures_of_the_same_call_as_pcm(tmp_path):
    """`miroir analyze --json` on an 8 kHz A-law agent file, alone and with a mu-law line file,
    gives the same result (speech, segments, prosody, cues) as on the same files converted to PCM
    by sox first. A stereo G.711 file is refused as a stereo PCM file is (two mono files)."""
    near = _call(tmp_path, "agent", _clips("03", 5), "a-law")
    far = _call(tmp_path, "line", _clips("08", 5), "mu-law")
    near_pcm = _pcm16_by_sox(near, tmp_path / "agent_pcm.wav")
    far_pcm = _pcm16_by_sox(far, tmp_path / "line_pcm.wav")
    for g711, pcm in (([near], [near_pcm]), ([near, far], [near_pcm, far_pcm])):
        runs = []
        for files in (g711, pcm):
            proc = miroir("analyze", str(files[0]), *(["--far", str(files[1])] if len(files) > 1
                                                     else []), "--json")
            assert proc.returncode == 0, proc.stderr
            assert "resampling from 8000 Hz to 16000 Hz" in proc.stderr
            result = json.loads(proc.stdout)
            del result["files"]
            runs.append(result)
        assert runs[0]["call"]["near_speech_ratio"] > 0.3, runs[0]["call"]
        assert runs[0] == runs[1]
    stereo = _call(tmp_path, "stereo", _clips("03", 1), "a-law", channels=2)
    stereo_pcm = _pcm16_by_sox(stereo, tmp_path / "stereo_pcm.wav")
    errors = [miroir("analyze", str(p), "--json") for p in (stereo, stereo_pcm)]
    for proc, path in zip(errors, (stereo, stereo_pcm), strict=True):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip() == (f"miroir: error: {path}: has 2 channels, expected mono (give "
                                       "the agent and the line as two mono files: `miroir analyze "
                                       "NEAR --far FAR`)")


def test_a_g711_file_cut_short_is_read_as_far_as_it_goes(tmp_path):
    """An interrupted recorder's A-law file: read to where it stops, with a warning, as a PCM file
    is."""
    path = _call(tmp_path, "call", _clips("03", 1) + _clips("08", 1), "a-law")
    data = path.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) - 8000])  # its last second
    proc = miroir("analyze", str(cut), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "cut short: its header says 32000 samples, it holds 24000" in proc.stderr
    assert json.loads(proc.stdout)["duration_s"] == pytest.approx(3.0, abs=0.01)


@pytest.mark.parametrize("law", LAWS)
def test_a_g711_recording_driven_into_clipping_reads_clipped(tmp_path, law):
    """G.711's top code lies below the stage's full-scale level (A-law 32256/32768 = 0.984, mu-law
    32124/32768 = 0.980): measured with the real `miroir analyze` on speaker 03's 25 EmoDB clips
    driven +20 dB into clipping, in a 16 kHz G.711 file (read as is, not resampled), the agent's
    channel read "signal: dc", never clipped, while the same as 16-bit PCM read clipped. A run of
    equal samples near full scale (a plateau) now flags it; the same clips at their own level
    (EmoDB's peaks reach full scale) are not flagged."""
    clips = [EMODB / c for c in _clips("03", 25)]
    flags = {}
    for name, gain in (("loud", []), ("clipped", ["gain", "20"])):
        path = tmp_path / f"{name}.wav"
        _sox("-D", *clips, "-e", law, "-b", "8", path, *gain)
        proc = miroir("analyze", str(path), "--json")
        assert proc.returncode == 0, proc.stderr
        flags[name] = json.loads(proc.stdout)["call"]["near_signal"]
    assert flags == {"loud": "ok", "clipped": "clipped"}, flags
