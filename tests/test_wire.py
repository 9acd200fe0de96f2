"""The wire contract: ids, topics and the payload allow-list."""

import json

import pytest

from miroir import wire


def _metrics(**extra):
    msg = {"v": 1, "site": "s1", "box": "b-01", "ts": 1.5, "seq": 1, "near_speech_ratio": 0.5,
           "far_speech_ratio": 0.0, "talk_state": "agent"}
    msg.update(extra)
    return msg


def test_round_trip():
    data = wire.encode("metrics", _metrics())
    assert wire.decode("metrics", data) == _metrics()


@pytest.mark.parametrize("bad", ["", "A", "a/b", "a+", "#", "a_b", "x" * 33, "é"])
def test_ids_refused(bad):
    with pytest.raises(wire.WireError):
        wire.topic("site", bad, "metrics")
    with pytest.raises(wire.WireError):
        wire.topic(bad, "box", "metrics")


def test_topic_round_trip():
    t = wire.topic("paris-1", "seat-07", "event")
    assert t == "miroir/v1/paris-1/seat-07/event"
    assert wire.parse_topic(t) == wire.Topic("paris-1", "seat-07", "event")
    for bad in ["miroir/v1/a/b", "miroir/v2/a/b/metrics", "miroir/v1/a/b/cmd", "miroir/v1/a/B/metrics"]:
        with pytest.raises(wire.WireError):
            wire.parse_topic(bad)


@pytest.mark.parametrize("field,value", [
    ("samples", [0.1, 0.2]),          # audio never leaves the box
    ("audio", "UklGRg=="),
    ("agent_emotion", "angry"),       # no agent affect, ever
    ("near_arousal", 0.7),
])
def test_allow_list_refuses_unknown_fields(field, value):
    with pytest.raises(wire.WireError, match=field):
        wire.encode("metrics", _metrics(**{field: value}))


@pytest.mark.parametrize("change,match", [
    ({"v": 2}, "schema version"),
    ({"seq": 0}, "seq"),
    ({"near_speech_ratio": 1.5}, "outside"),
    ({"near_speech_ratio": float("nan")}, "finite"),
    ({"talk_state": "shouting"}, "talk_state"),
    ({"near_talking": 1}, "near_talking"),
    ({"seq": True}, "bool"),
])
def test_bad_values_refused(change, match):
    with pytest.raises(wire.WireError, match=match):
        wire.validate("metrics", _metrics(**change))


def test_free_text_status_fields_are_bounded():
    ok = wire.status_message("s", "b", "online", 1.0, capture_error="x" * wire.MAX_TEXT_CHARS)
    assert ok["capture_error"] == "x" * wire.MAX_TEXT_CHARS
    for field in ("capture_error", "version"):
        with pytest.raises(wire.WireError, match=f"{field}: longer than"):
            wire.status_message("s", "b", "online", 1.0, **{field: "x" * (wire.MAX_TEXT_CHARS + 1)})


def test_no_list_or_object_field_in_schema():
    """No allow-listed field can carry an array (of samples) or a nested object."""
    for kind, fields in wire.ALLOWED_FIELDS.items():
        for name, types in fields.items():
            assert list not in types and dict not in types, f"{kind}.{name}"


def test_decode_garbage():
    for payload in [b"", b"not json", b"[1,2]", b"\xff\xfe", json.dumps(_metrics(seq=-1)).encode(),
                    b"{" * 5000, b"[" * 3000]:  # nested too deep for the parser, within the size
        with pytest.raises(wire.WireError):
            wire.decode("metrics", payload)
    with pytest.raises(wire.WireError, match="out of range"):  # past SQLite's INTEGER
        wire.cmd_message("s", "b", "resend", 1.0, from_seq=1, to_seq=2**63)
    for field, value in (("seq", 2**63), ("ts", 10**400), ("window_s", -(2**64))):
        with pytest.raises(wire.WireError, match=f"{field}: integer out of range"):
            wire.decode("metrics", json.dumps(_metrics(**{field: value})).encode())


def test_status_has_no_seq():
    msg = wire.status_message("s", "b", "offline", 1.0, dropped=3)
    assert "seq" not in msg and msg["state"] == "offline"
