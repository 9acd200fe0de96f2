"""Numbers people type (forms, query strings, command lines, CSV cells): ASCII digits only.

Python's ``int`` and ``float`` take more than that: other scripts' digits (``'١٢'``, ``'１２'``),
underscores (``'1_000'``) and spaces at either end; ``float`` also takes ``nan``, ``inf`` and
exponents. A field that reads ``'١٢'`` as 12 stores what its user did not see.
"""

from __future__ import annotations

import re

WHOLE_RULE = "a whole number written with the digits 0-9 only"
""":func:`whole_number`'s rule in words, for error messages."""
DECIMAL_RULE = "a number written with the digits 0-9 and at most one '.' only"
""":func:`decimal_number`'s rule in words, for error messages."""
_WHOLE = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def whole_number(text: str, field: str, *, signed: bool = False) -> int:
    """``text`` as a whole number of ASCII digits (no space, underscore, ``+`` nor another
    script's digits; a leading ``-`` only if ``signed``); ValueError naming ``field`` otherwise."""
    if not _WHOLE.fullmatch(text) or (text.startswith("-") and not signed):
        raise ValueError(f"{field} must be {WHOLE_RULE}")
    return int(text)


def decimal_number(text: str, field: str, *, signed: bool = False) -> float:
    """``text`` as a number of ASCII digits with at most one ``.`` (no exponent, space,
    underscore, ``+``, ``nan`` nor ``inf``; a leading ``-`` only if ``signed``); ValueError naming
    ``field`` otherwise."""
    if not _DECIMAL.fullmatch(text) or (text.startswith("-") and not signed):
        raise ValueError(f"{field} must be {DECIMAL_RULE}")
    return float(text)
