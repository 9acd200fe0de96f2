"""`miroir analyze` on real recordings, and its one-line errors on bad input."""

import json
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bench.common import ami_turns, frame_labels

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
AMI = SHARED / "ami"


def miroir(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "miroir", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def _write_wav(path: Path, samples: np.ndarray, rate_hz: int, channels: int = 1,
               width: int = 2) -> Path:
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(channels)
        wf.setsampwidth(width)
        wf.setframerate(rate_hz)
        wf.writeframes(samples.tobytes())
    return path


def _read_pcm(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wf:
        return np.frombuffer(wf.readframes(wf.getnframes()), dtype="<i2")


def test_vad_auc_on_ami_through_the_cli():
    """Frame-level ROC-AUC of vad.near.prob against the union of AMI speaker turns >= 0.95."""
    turns = ami_turns()
    wavs = sorted(AMI.glob("*.wav"))
    assert len(wavs) == 12
    labels, scores = [], []
    for wav in wavs:
        proc = miroir("analyze", str(wav), "--json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        prob = np.array(result["vad"]["near"]["prob"])
        step_s = result["frame_s"]
        assert step_s == pytest.approx(0.032)
        labels.append(frame_labels(turns[wav.stem], len(prob), step_s))
        scores.append(prob)
        segs = result["vad"]["near"]["segments"]
        assert all(0 <= s < e <= result["duration_s"] + 0.05 for s, e in segs)
    auc = roc_auc_score(np.concatenate(labels), np.concatenate(scores))
    print(f"AMI frame-level ROC-AUC: {auc:.4f}")
    assert auc >= 0.95


def test_two_channels_and_text_output():
    near = SHARED / "ami-headsets" / "source0.wav"
    far = SHARED / "ami-headsets" / "source1.wav"
    proc = miroir("analyze", str(near), "--far", str(far))
    assert proc.returncode == 0, proc.stderr
    assert "agent (near): speech" in proc.stdout and "line (far): speech" in proc.stdout
    result = json.loads(miroir("analyze", str(near), "--far", str(far), "--json").stdout)
    assert result["call"]["near_speech_ratio"] > 0.1 and result["call"]["far_speech_ratio"] > 0.1
    assert len(result["metrics"]) == 60
    assert {m["talk_state"] for m in result["metrics"]} >= {"agent", "prospect"}


@pytest.mark.parametrize("rate_hz", [8000, 44100])
def test_other_rates_resampled_with_a_notice(tmp_path, rate_hz):
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(rate_hz) * 300).astype("<i2")
    wav = _write_wav(tmp_path / "a.wav", noise, rate_hz)
    proc = miroir("analyze", str(wav), "--json")
    assert proc.returncode == 0, proc.stderr
    assert f"resampling from {rate_hz} Hz" in proc.stderr
    assert json.loads(proc.stdout)["duration_s"] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("case,message", [
    ("stereo", "2 channels, expected mono"),
    ("not_wav", "not a readable WAV file (file does not start with RIFF id)"),
    ("float", "float samples"),
    ("40bit", "40-bit samples, expected 8-, 16-, 24- or 32-bit PCM"),
    ("rate", "sample rate 4000 Hz"),
    ("empty", "holds no audio"),
    # its header says 1 s of audio, none follows: the error said so after a warning line
    ("header_only", "holds no audio (its header says 16000 samples: cut short)"),
    ("zero_bytes", "empty, or cut short in its header"),
    ("extensible_float", "float samples; convert them first"),
    # G.711 is read (tests/test_g711.py), but only as the 8-bit codes it is
    ("alaw_16bit", "not a readable WAV file (A-law samples of 16 bits, while G.711 has 8)"),
    ("alaw_cut_in_header", "not a readable WAV file (empty, or cut short in its header)"),
    ("ima_adpcm", "(IMA ADPCM samples, format tag 17, neither PCM nor G.711; convert them first"),
    ("missing", "no such file"),
    ("through_a_file", "cannot read (Not a directory)"),
])
def test_bad_input_one_line_error(tmp_path, case, message):
    one_s = np.zeros(16000, dtype="<i2")
    path = tmp_path / f"{case}.wav"
    if case == "stereo":
        _write_wav(path, np.zeros(32000, dtype="<i2"), 16000, channels=2)
    elif case == "not_wav":
        path.write_text("hello, I am not audio\n")
    elif case == "float":  # WAVE_FORMAT_IEEE_FLOAT, as some recorders write
        fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
        data = np.zeros(16000, dtype="<f4").tobytes()
        body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
                + b"data" + struct.pack("<I", len(data)) + data)
        path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    elif case == "40bit":
        fmt = struct.pack("<HHIIHH", 1, 1, 16000, 80000, 5, 40)
        data = bytes(5 * 16000)
        body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
                + b"data" + struct.pack("<I", len(data)) + data)
        path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    elif case == "through_a_file":
        _write_wav(tmp_path / "file.wav", one_s, 16000)
        path = tmp_path / "file.wav" / "x.wav"
    elif case == "rate":
        _write_wav(path, one_s, 4000)
    elif case == "empty":
        _write_wav(path, np.zeros(0, dtype="<i2"), 16000)
    elif case == "header_only":
        path.write_bytes(_write_wav(tmp_path / "one_s.wav", one_s, 16000).read_bytes()[:44])
    elif case == "zero_bytes":
        path.write_bytes(b"")
    elif case in ("alaw_16bit", "alaw_cut_in_header", "ima_adpcm"):  # written by sox, as a PBX
        subprocess.run(["sox", str(SHARED / "emodb" / "wav" / "03a01Fa.wav"), "-r", "8000",
                        "-e", "ima-adpcm" if case == "ima_adpcm" else "a-law", str(path)], check=True)
        data = path.read_bytes()
        if case == "alaw_16bit":  # the header says 16 bits a sample (2 bytes a frame)
            assert data[20:22] == b"\x06\x00" and data[32:36] == b"\x01\x00\x08\x00"
            path.write_bytes(data[:32] + b"\x02\x00\x10\x00" + data[36:])
        elif case == "alaw_cut_in_header":  # in its format chunk
            path.write_bytes(data[:30])
    elif case == "extensible_float":  # WAVE_FORMAT_EXTENSIBLE (0xFFFE), float subformat (3)
        fmt = (struct.pack("<HHIIHH", 0xFFFE, 1, 16000, 64000, 4, 32) + struct.pack("<HHI", 22, 32, 4)
               + bytes.fromhex("0300000000001000800000aa00389b71"))
        data = np.zeros(16000, dtype="<f4").tobytes()
        body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
                + b"data" + struct.pack("<I", len(data)) + data)
        path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    proc = miroir("analyze", str(path))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("miroir: error:") and message in lines[0], lines


def test_24_and_32_bit_pcm_as_sox_writes_it_is_read(tmp_path):
    """sox (and ffmpeg) write 24- and 32-bit PCM in the extensible format (0xFFFE, PCM subformat):
    read as the same samples as the 16-bit file, and analysed alike (they were refused as
    "float or extensible-format samples")."""
    from edge.source import read_wav

    src = SHARED / "ami-headsets" / "source0.wav"
    want = read_wav(src, notice=False).samples
    for bits in (24, 32):
        out = tmp_path / f"w{bits}.wav"
        subprocess.run(["sox", str(src), "-b", str(bits), "-e", "signed-integer", str(out)],
                       check=True, timeout=60)
        assert out.read_bytes()[20:22] == b"\xfe\xff", bits  # WAVE_FORMAT_EXTENSIBLE
        assert np.array_equal(read_wav(out, notice=False).samples, want), bits
    proc = miroir("analyze", str(tmp_path / "w24.wav"), "--json")
    assert proc.returncode == 0, proc.stderr
    ref = json.loads(miroir("analyze", str(src), "--json").stdout)
    assert json.loads(proc.stdout)["call"] == ref["call"]


def test_other_sample_widths_and_a_file_cut_short_are_read(tmp_path):
    """8-, 24- and 32-bit PCM read as 16-bit does (the same speech, the same speech share); a file
    whose header promises more than it holds (an interrupted recorder) is read as far as it goes,
    with a warning."""
    from edge.source import read_wav

    x = read_wav(SHARED / "ami-headsets" / "source0.wav", notice=False).samples[: 20 * 16000]
    pcm16 = np.round(x * 32767).astype("<i2")
    ref = _write_wav(tmp_path / "w16.wav", pcm16, 16000)
    files = {
        1: _write_wav(tmp_path / "w8.wav", (np.round(x * 127) + 128).astype(np.uint8), 16000, width=1),
        3: _write_wav(tmp_path / "w24.wav", np.frombuffer(b"".join(
            int(v).to_bytes(3, "little", signed=True) for v in np.round(x * 8388607).astype(int)),
            dtype=np.uint8), 16000, width=3),
        4: _write_wav(tmp_path / "w32.wav", np.round(x.astype(np.float64) * 2147483647).astype("<i4"),
                      16000, width=4),
    }
    want = read_wav(ref, notice=False).samples
    for width, path in files.items():
        got = read_wav(path, notice=False).samples
        assert np.abs(got - want).max() <= 1.0 / 127 + 1e-6, width  # 8-bit: its own resolution
    data = ref.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    proc = miroir("analyze", str(cut), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "cut short" in proc.stderr
    assert json.loads(proc.stdout)["duration_s"] == pytest.approx(10.0, abs=0.01)


def test_dead_channel_short_file_and_campaign_through_the_cli(tmp_path):
    """A dead headset reads "no signal"; a 5 ms file gives a result, not a traceback; a campaign
    file is applied, and a bad one is a one-line error naming the key."""
    far = SHARED / "ami-headsets" / "source1.wav"
    dead = _write_wav(tmp_path / "dead.wav", np.zeros(10 * 16000, dtype="<i2"), 16000)
    proc = miroir("analyze", str(dead), "--far", str(far))
    assert proc.returncode == 0, proc.stderr
    assert "agent (near): no signal" in proc.stdout and "line (far): speech" in proc.stdout
    result = json.loads(miroir("analyze", str(dead), "--far", str(far), "--json").stdout)
    assert result["call"]["near_signal"] == "none" and "near" not in result["prosody"]
    assert result["call"]["near_no_signal_s"] >= 7.0
    tiny = _write_wav(tmp_path / "tiny.wav", (np.arange(80) % 7 * 300).astype("<i2"), 16000)
    proc = miroir("analyze", str(tiny), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["duration_s"] == 0.005, proc.stderr
    assert "a dead channel is not told from silence" in proc.stderr  # its "ok" is no verdict
    assert "not told from silence" not in miroir("analyze", str(dead), "--json").stderr
    # an agent file shorter than the line's read as a dead headset, with no word of why
    short = _write_wav(tmp_path / "short.wav", _read_pcm(SHARED / "ami-headsets" / "source0.wav")[:4 * 16000],
                       16000)
    proc = miroir("analyze", str(short), "--far", str(far))
    assert proc.returncode == 0, proc.stderr
    assert "the agent file lasts 4.0 s and the line file 60.0 s" in proc.stderr
    assert "past its end the agent channel is read as digital silence" in proc.stderr
    assert "lasts" not in miroir("analyze", str(SHARED / "ami-headsets" / "source0.wav"), "--far",
                                 str(far)).stderr
    near = SHARED / "ami-headsets" / "source0.wav"
    quick = tmp_path / "quick.toml"
    quick.write_text("[slow_response]\non_s = 1.0\n")
    cues = json.loads(miroir("analyze", str(near), "--far", str(far), "--json",
                             "--campaign", str(quick)).stdout)["cues"]
    default = json.loads(miroir("analyze", str(near), "--far", str(far), "--json").stdout)["cues"]
    slow = [c for c in cues if c["cue"] == "slow_response"]
    assert slow and all(c["evidence_threshold"] == 1.0 for c in slow)
    first_default = next(c["start_s"] for c in default if c["cue"] == "slow_response")
    assert slow[0]["start_s"] < first_default - 0.5  # raised 1 s into the gap instead of 2 s
    # the affect model, as on a box, only for a campaign that discloses it (it ran regardless)
    proc = miroir("analyze", str(near), "--far", str(far), "--campaign", str(quick), "--affect")
    assert proc.returncode == 2 and "[affect] disclosed = true" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    quick.write_text("[slow_response]\non_s = -1\n")
    proc = miroir("analyze", str(near), "--campaign", str(quick))
    assert proc.returncode == 2 and "slow_response.on_s" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_the_text_output_says_how_long_a_channel_had_no_signal(tmp_path):
    """A headset unplugged for the last 24 s of a minute: under half the recording, so the channel
    is not "no signal" as a whole, but its line says how long it had none (it printed only a
    speech share that counted the dead stretch as silence)."""
    from edge.source import read_wav

    x = read_wav(SHARED / "ami-headsets" / "source0.wav", notice=False).samples.copy()
    x[36 * 16000:] = 0.0
    near = _write_wav(tmp_path / "unplugged.wav", np.round(x * 32767).astype("<i2"), 16000)
    far = SHARED / "ami-headsets" / "source1.wav"
    proc = miroir("analyze", str(near), "--far", str(far))
    assert proc.returncode == 0, proc.stderr
    (agent,) = [line for line in proc.stdout.splitlines() if line.startswith("agent (near)")]
    assert agent.startswith("agent (near): speech") and "no signal for 23 s" in agent, agent
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("line (far)")]
    assert "no signal" not in line, line


@pytest.mark.parametrize("rate_hz", [16000, 8000])
def test_a_dead_channel_converted_with_sox_is_still_no_signal(tmp_path, rate_hz):
    """A float recording of a dead headset, converted as the float error says (`sox IN.wav -b 16
    -e signed OUT.wav`): sox dithers its digital silence to +-1 LSB, which is still no signal
    (it read as a silent agent: "speech 0.0 %", and the prospect "waiting" for 8 s)."""
    silent = _write_wav(tmp_path / "zero.wav", np.zeros(60 * 16000, dtype="<i2"), 16000)
    as_float = tmp_path / "float.wav"
    dithered = tmp_path / "dithered.wav"
    subprocess.run(["sox", str(silent), "-e", "float", "-b", "32", str(as_float)], check=True,
                   timeout=60)
    subprocess.run(["sox", str(as_float), "-r", str(rate_hz), "-b", "16", "-e", "signed",
                    str(dithered)], check=True, timeout=60)
    with wave.open(str(dithered)) as wf:
        assert np.frombuffer(wf.readframes(wf.getnframes()), dtype="<i2").any()  # dithered
    far = SHARED / "ami-headsets" / "source1.wav"
    proc = miroir("analyze", str(dithered), "--far", str(far))
    assert proc.returncode == 0, proc.stderr
    assert "agent (near): no signal" in proc.stdout, proc.stdout
    assert "cue slow_response" not in proc.stdout, proc.stdout


def test_a_reader_that_stops_early_is_no_error():
    """`miroir analyze --json | head`: the reader closes the pipe; the command stops quietly
    (status 141, as a shell tool does), with no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "miroir", "analyze",
                             str(SHARED / "ami-headsets" / "source0.wav"), "--far",
                             str(SHARED / "ami-headsets" / "source1.wav"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first byte
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err


def _looped_pair(tmp_path: Path, minutes: int, rate_hz: int = 16000) -> tuple[Path, Path]:
    """The two AMI headsets looped to ``minutes``, as two mono files at ``rate_hz`` (sox)."""
    out = []
    for name in ("source0", "source1"):
        path = tmp_path / f"{name}_{minutes}min_{rate_hz}.wav"
        subprocess.run(["sox", str(SHARED / "ami-headsets" / f"{name}.wav"), "-r", str(rate_hz),
                        str(path), "repeat", str(minutes - 1)], check=True, timeout=60)
        out.append(path)
    return out[0], out[1]


def test_a_long_recording_is_read_block_by_block(tmp_path):
    """The reader yields a second at a time, the same samples as the whole file (resampled alike),
    and checks a stereo file before reading its audio."""
    from edge.source import WavStream, pair_blocks, resample

    near, far = _looped_pair(tmp_path, 2, rate_hz=8000)
    with wave.open(str(near)) as wf:
        whole = np.frombuffer(wf.readframes(wf.getnframes()), dtype="<i2").astype(np.float32) / 32768
    blocks = list(WavStream(near, notice=False).blocks())
    assert max(len(b) for b in blocks) <= 2 * 16000 and len(blocks) >= 120
    assert np.array_equal(np.concatenate(blocks), resample(whole, 8000))
    pairs = list(pair_blocks(WavStream(near, notice=False), WavStream(far, notice=False)))
    assert {b.shape for b in pairs} == {(2, 16000)} and len(pairs) == 120


def test_a_long_recording_is_analysed_without_holding_its_audio(tmp_path, capsys):
    """`miroir analyze` of 3 minutes of two headsets: Python's allocations peak under the size of
    the audio itself, so not even one copy of it is held (it read both files whole, stacked them,
    and copied each channel again for its prosody: 4 copies, 15 MB a minute; 939 MB of RSS for an
    hour), with the same result as the recording analysed in memory."""
    import tracemalloc

    from edge.pipeline import analyze, load_vad_model
    from edge.source import pair, read_wav
    from miroir.cli import main

    near, far = _looped_pair(tmp_path, 3)
    audio_bytes = 2 * 3 * 60 * 16000 * 4  # float32, both channels: 23 MB
    load_vad_model()  # the modules imported before counting
    tracemalloc.start()
    try:
        assert main(["analyze", str(near), "--far", str(far), "--json"]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    streamed = json.loads(capsys.readouterr().out)
    print(f"peak {peak / 1e6:.1f} MB for {audio_bytes / 1e6:.1f} MB of audio")
    assert peak < audio_bytes
    in_memory = analyze(pair(read_wav(near), read_wav(far)), load_vad_model())
    streamed.pop("files")
    assert json.dumps(streamed) == json.dumps(in_memory)


def test_a_recording_too_long_for_the_memory_is_refused_at_once(tmp_path):
    """A WAV as long as the format allows (37 h at 16 kHz, a sparse file) on a machine with 1.5 GB
    to give (an address-space limit): a one-line error that says what it needs and how to split the
    file, before any work (it died with a MemoryError traceback; read block by block, it would
    have worked for hours before running out)."""
    import resource

    data_bytes = 0xFFFFFFFF - 46
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    head = (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
            + fmt + b"data" + struct.pack("<I", data_bytes))
    path = tmp_path / "day.wav"
    with path.open("wb") as f:
        f.write(head)
        f.truncate(len(head) + data_bytes)  # sparse: no disk used

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))

    proc = subprocess.run([sys.executable, "-m", "miroir", "analyze", str(path), "--json"],
                          capture_output=True, text=True, timeout=60, check=False,
                          preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, lines
    assert lines[0].startswith("miroir: error: 37.3 h of audio needs about 56"), lines
    assert "trim 0 " in lines[0] and proc.stdout == ""


def test_ctrl_c_during_a_long_analysis_stops_it_at_once_and_says_so(tmp_path):
    """Ctrl-C once the analysis of 20 minutes of two headsets has reported its first 10: it
    stopped within 0.05 s with status 130 but said nothing at all, the last line on the terminal
    being the progress report ("analysed 10.0 of 20.0 min of audio"), as if the analysis had
    finished without output. It says it was interrupted; no traceback, no result, no file left."""
    import os
    import signal

    near, far = _looped_pair(tmp_path, 20)
    before = sorted(tmp_path.iterdir())
    proc = subprocess.Popen([sys.executable, "-m", "miroir", "analyze", str(near), "--far",
                             str(far)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own group, as a terminal's job
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    try:
        lines = []
        for line in proc.stderr:  # the analysis is under way, half done
            lines.append(line)
            if "analysed 10.0 of 20.0 min of audio" in line:
                break
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(lines) + rest
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == "miroir: interrupted", err[-2000:]
    assert out == "" and sorted(tmp_path.iterdir()) == before


def test_a_named_pipe_is_waited_on_with_a_notice_and_read_when_written(tmp_path):
    """`miroir analyze p.wav` of a named pipe nothing wrote to yet sat silent for ever (its open
    waits for a writer: a mistyped path into a FIFO, or the writer not started). It says it waits;
    what a writer then sends is analysed (`sox call.wav -t wav p.wav`), and Ctrl-C stops a wait
    that nothing ends."""
    import os
    import select
    import signal

    clip = SHARED / "emodb" / "wav" / "03a01Fa.wav"
    pipe = tmp_path / "p.wav"
    os.mkfifo(pipe)
    for write in (True, False):
        proc = subprocess.Popen([sys.executable, "-m", "miroir", "analyze", str(pipe)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        assert proc.stderr is not None
        try:
            # the notice, before anything is written (it came never: 30 s is a stuck command)
            assert select.select([proc.stderr], [], [], 30)[0], "no notice within 30 s"
            first = proc.stderr.readline()
            assert first.rstrip().endswith(f"WARNING edge.source: {pipe}: a named pipe that "
                                           "nothing writes to yet: waiting for a writer (Ctrl-C "
                                           "stops)"), first
            if write:
                pipe.write_bytes(clip.read_bytes())
            else:
                os.killpg(proc.pid, signal.SIGINT)
            out, rest = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if write:
            assert proc.returncode == 0, rest
            assert out.startswith("duration: 2.0 s\nagent (near): speech "), out
        else:
            assert proc.returncode == 130, rest
            assert rest.strip().splitlines()[-1] == "miroir: interrupted", rest
        assert "Traceback" not in rest, rest


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP"])
def test_a_stop_signal_ends_a_command_as_ctrl_c_does(tmp_path, stop):
    """SIGTERM (`kill`, a service or a job runner stopping it) and SIGHUP (its terminal closed)
    killed every command but `edge run` outright: exit 143 or 129, no word, and no cleanup, so
    that `miroir dashboard backup` stopped so 1.5 s into a 700 MB copy left a 99 MB file and its
    journal, which the next run refused to overwrite. Both now end a command as Ctrl-C does:
    "miroir: interrupted", exit 130 (here a wait on a named pipe nothing writes to)."""
    import os
    import select
    import signal

    pipe = tmp_path / "p.wav"
    os.mkfifo(pipe)
    proc = subprocess.Popen([sys.executable, "-m", "miroir", "analyze", str(pipe)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stderr is not None
    try:
        assert select.select([proc.stderr], [], [], 30)[0], "no notice within 30 s"
        assert "waiting for a writer" in proc.stderr.readline()
        proc.send_signal(getattr(signal, stop))
        out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, rest)
    assert rest.strip().splitlines() == ["miroir: interrupted"], rest
    assert out == ""


def test_a_wav_written_through_a_pipe_is_whole_not_cut_short(tmp_path):
    """A WAV whose writer could not go back to its header (`sox clip.wav -t wav - trim 0 2 |
    cat > f.wav` leaves 0x7FFFF000 as its data size, ffmpeg and most streaming writers 0xFFFFFFFF) was
    read whole, but warned "cut short: its header says 1073739776 samples, it holds 32000"
    (2147483647 for 0xFFFFFFFF): a complete recording reported as damaged. Read the same, without
    the warning; a header that gives a real length the file falls short of is still warned of."""
    clip = SHARED / "emodb" / "wav" / "03a01Fa.wav"
    piped = tmp_path / "piped.wav"
    piped.write_bytes(subprocess.run(["sox", str(clip), "-t", "wav", "-", "trim", "0", "2"],
                                     capture_output=True, check=True, timeout=60).stdout)
    raw = clip.read_bytes()
    at = raw.index(b"data")
    assert struct.unpack_from("<I", piped.read_bytes(), at + 4)[0] == 0x7FFFF000
    streamed = tmp_path / "streamed.wav"  # RIFF and data sizes both left at 0xFFFFFFFF
    streamed.write_bytes(raw[:4] + b"\xff" * 4 + raw[8:at + 4] + b"\xff" * 4 + raw[at + 8:])
    longer = tmp_path / "longer.wav"  # a real length, ten times what the file holds
    longer.write_bytes(raw[:at + 4] + struct.pack("<I", 10 * (len(raw) - at - 8)) + raw[at + 8:])
    ref = miroir("analyze", str(clip), "--json")
    assert ref.returncode == 0, ref.stderr
    want = json.loads(ref.stdout)
    for path, warned in ((piped, False), (streamed, False), (longer, True)):
        proc = miroir("analyze", str(path), "--json")
        assert proc.returncode == 0, proc.stderr
        assert ("cut short" in proc.stderr) is warned, (path.name, proc.stderr)
        got = json.loads(proc.stdout)
        assert got["duration_s"] == 2.0 and got["call"] == want["call"], path.name


def _through_a_pipe(path: Path, *effect: str) -> subprocess.Popen[bytes]:
    """sox writing ``path`` as WAV into a pipe, as `<(sox path -t wav -)` gives it to a command
    (with an effect, sox cannot know the length: its header then gives none)."""
    return subprocess.Popen(["sox", str(path), "-t", "wav", "-", *effect],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def test_a_recording_given_through_a_pipe_has_its_length_and_its_progress(tmp_path):
    """`miroir analyze <(sox near.wav -t wav -) --far far.wav`, a minute of two headsets, warned
    "the agent file lasts 0.0 s and the line file 60.0 s" (a pipe has no size on disk, and the
    length was capped by it), and 11 minutes through a pipe never said how far they had got (the
    10-minute report compared with that 0 s). The header's length is taken for a pipe, none when
    the writer left none, and the progress is reported either way."""
    headsets = SHARED / "ami-headsets"
    sox = _through_a_pipe(headsets / "source0.wav")
    assert sox.stdout is not None
    fd = sox.stdout.fileno()
    proc = subprocess.run([sys.executable, "-m", "miroir", "analyze", f"/dev/fd/{fd}", "--far",
                           str(headsets / "source1.wav"), "--json"], pass_fds=(fd,),
                          capture_output=True, text=True, timeout=120, check=False)
    sox.stdout.close()
    sox.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "lasts" not in proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["duration_s"] == 60.0
    near, _ = _looped_pair(tmp_path, 11)
    for effect, total in (((), " of 11.0"), (("trim", "0"), "")):  # a length given, and none
        sox = _through_a_pipe(near, *effect)
        assert sox.stdout is not None
        fd = sox.stdout.fileno()
        proc = subprocess.run([sys.executable, "-m", "miroir", "analyze", f"/dev/fd/{fd}"],
                              pass_fds=(fd,), capture_output=True, text=True, timeout=300,
                              check=False)
        sox.stdout.close()
        sox.wait(timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert f"INFO edge.pipeline: analysed 10.0{total} min of audio\n" in proc.stderr, \
            (effect, proc.stderr)
        assert "cut short" not in proc.stderr and proc.stdout.startswith("duration: 660.0 s\n")


@pytest.mark.parametrize("command", ["analyze", "edge run"])
def test_a_stereo_file_s_error_gives_the_syntax_of_the_command_that_read_it(tmp_path, command):
    """A stereo file's error said "give the agent and the line as two files: NEAR --far FAR",
    analyze's syntax, under `edge run --replay` too, where --far does not exist. Each command's
    error now gives its own command line, which its parser takes as it stands."""
    import re
    import shlex

    from miroir.cli import build_parser

    stereo = _write_wav(tmp_path / "stereo.wav", np.zeros(32000, dtype="<i2"), 16000, channels=2)
    mono = _write_wav(tmp_path / "mono.wav", np.zeros(16000, dtype="<i2"), 16000)
    if command == "analyze":
        proc = miroir("analyze", str(stereo), "--json")
    else:
        config = tmp_path / "box.toml"
        config.write_text(f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\n'
                          f'state_dir = "{tmp_path / "state"}"\n')
        proc = miroir("edge", "run", "--config", str(config), "--replay", str(stereo), str(mono))
    assert proc.returncode == 2, proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if "channels, expected mono" in x]
    [typed] = re.findall(r"`(miroir [^`]*)`", line) or [""]
    assert typed.startswith(f"miroir {command} "), line
    build_parser().parse_args(shlex.split(typed)[1:])  # exits 2 if its parser refuses it
