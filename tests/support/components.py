"""Skip locally, fail in CI, when a real component needed by a test is missing.

The test suite exercises real services (PostgreSQL, SoftHSM2, rsyslog ...) instead of mocks.
On a developer machine a missing component should not block the rest of the suite, so the
test is skipped with the reason printed. In CI a missing component means the environment is
broken (``scripts/setup-system.sh`` did not run or failed) and silently skipping would turn
a red build green while proving nothing, so the test fails loudly instead.

CI is detected by a non-empty ``CI`` environment variable (set by ``.ci/run`` and by every
common CI service).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import pytest

__all__ = ["in_ci", "require_component"]


def in_ci() -> bool:
    """Whether we run under CI (``CI`` set to any non-empty value)."""
    return bool(os.environ.get("CI"))


def require_component(name: str, reason: str) -> NoReturn:
    """Stop the current test because component ``name`` is unavailable.

    Call it from a fixture or test once you have established that the component is missing;
    it never returns: ``pytest.fail`` under CI, ``pytest.skip`` elsewhere.
    """
    __tracebackhide__ = True  # report the caller's line, not this helper's
    message = f"required component {name!r} unavailable: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI is set: missing components are errors, not skips)")
    # Printed as well as recorded, so that `pytest -s` shows it next to the test.
    print(f"SKIP {message}", file=sys.stderr)
    pytest.skip(message)
