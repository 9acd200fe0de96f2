"""Time-based one-time passwords (RFC 6238, HMAC-SHA1, 6 digits, 30 s steps), stdlib only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time
from urllib.parse import quote

STEP_S = 30
"""Time step of a one-time code: RFC 6238's default, which every authenticator app uses."""
DIGITS = 6
WINDOW_STEPS = 1
"""Steps accepted either side of the current one (clock drift between phone and server)."""


def new_secret() -> str:
    """A fresh 160-bit secret, base32 without padding (what authenticator apps expect)."""
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")


def _key(secret: str) -> bytes:
    s = secret.strip().replace(" ", "").upper()
    return base64.b32decode(s + "=" * (-len(s) % 8))


def hotp(secret: str, counter: int) -> str:
    """RFC 4226 HOTP value of ``counter`` as a zero-padded decimal string."""
    digest = hmac.new(_key(secret), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % (10 ** DIGITS)
    return str(code).zfill(DIGITS)


def step_of(now_s: float) -> int:
    """The TOTP time step of a Unix time in seconds."""
    return int(now_s // STEP_S)


def totp(secret: str, now_s: float | None = None) -> str:
    """The current code of ``secret`` (RFC 6238)."""
    return hotp(secret, step_of(time.time() if now_s is None else now_s))


def verify(secret: str, code: str, last_step: int = 0, now_s: float | None = None) -> int | None:
    """Check ``code``; return the matched step (store it to refuse replays) or None.

    Args:
        secret: The user's base32 secret.
        code: What the user typed (6 ASCII digits; spaces are ignored).
        last_step: The step of the last accepted code; it and older steps are refused.
        now_s: Unix time in seconds (defaults to now).
    """
    code = code.strip().replace(" ", "")
    # ASCII digits only: str.isdigit also takes other scripts' digits ('١٢٣٤٥٦'), which no code
    # is and which compare_digest refuses with a TypeError
    if len(code) != DIGITS or not (code.isascii() and code.isdigit()):
        return None
    now = step_of(time.time() if now_s is None else now_s)
    for step in range(now - WINDOW_STEPS, now + WINDOW_STEPS + 1):
        if step > last_step and hmac.compare_digest(hotp(secret, step), code):
            return step
    return None


def provisioning_uri(secret: str, username: str, issuer: str = "Miroir") -> str:
    """The ``otpauth://`` URI that authenticator apps import."""
    return (f"otpauth://totp/{quote(issuer)}:{quote(username)}?secret={secret}"
            f"&issuer={quote(issuer)}&digits={DIGITS}&period={STEP_S}")
