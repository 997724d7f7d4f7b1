"""Fixtures of the search tests (helpers live in ``search_helpers``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

# Make the sibling helper module importable (this directory is not a package).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from search_helpers import SYNTHEA, HmacTokens, load_synthea  # noqa: E402


@pytest.fixture(scope="session")
def tokens() -> HmacTokens:
    return HmacTokens()


@pytest.fixture(scope="session")
def synthea() -> list[dict[str, Any]]:
    if not SYNTHEA.is_dir():
        pytest.fail(f"Synthea corpus missing: {SYNTHEA}")
    return list(load_synthea())
