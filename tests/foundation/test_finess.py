"""FINESS numbers: shape and Luhn check digit."""

from __future__ import annotations

import pytest

from hdsvault.tenants.finess import InvalidFiness, luhn_valid, validate_finess


@pytest.mark.parametrize("finess", ["750712184", "690781810", " 750 712 184 ", "2A0000001"])
def test_valid(finess: str) -> None:
    assert validate_finess(finess) == finess.replace(" ", "").strip()


@pytest.mark.parametrize(
    ("finess", "reason"),
    [
        ("750712185", "check digit"),
        ("75071218", "9 characters"),
        ("7507121840", "9 characters"),
        ("75O712184", "9 characters"),
        ("", "9 characters"),
        ("2C0000001", "9 characters"),
    ],
)
def test_invalid(finess: str, reason: str) -> None:
    with pytest.raises(InvalidFiness, match=reason):
        validate_finess(finess)


def test_luhn_detects_every_single_digit_error() -> None:
    base = "750712184"
    for i in range(9):
        for d in "0123456789":
            if d != base[i]:
                assert not luhn_valid(base[:i] + d + base[i + 1 :])
