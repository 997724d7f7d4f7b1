"""FINESS numbers: the national identifier of French health and social establishments.

A FINESS number has 9 characters: a 2-character department code (digits, or ``2A``/``2B`` for
Corsica), 6 digits, and a Luhn check digit computed over the first 8. For Corsican numbers the
published sources disagree on how the letters enter the Luhn sum, so only their shape is checked.
"""

from __future__ import annotations

import re

_SHAPE = re.compile(r"^(?:\d{2}|2[AB])\d{7}$")


class InvalidFiness(ValueError):
    """Not a well-formed FINESS number."""


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (check digit last) satisfies the Luhn (mod 10) rule."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def validate_finess(value: str) -> str:
    """Return the normalised FINESS number, or raise :class:`InvalidFiness` saying why."""
    finess = value.strip().upper().replace(" ", "")
    if not _SHAPE.match(finess):
        raise InvalidFiness(
            f"FINESS {value!r} must be 9 characters: 2-character department code "
            "(digits, 2A or 2B) followed by 7 digits"
        )
    if finess[:2] in ("2A", "2B"):
        return finess
    if not luhn_valid(finess):
        raise InvalidFiness(f"FINESS {value!r} has a wrong check digit (Luhn key)")
    return finess
