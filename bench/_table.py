"""Shared table output for the benchmarks: one look for every ``bench/*.py`` result.

Usage::

    from _table import print_table          # when run as ``python bench/x.py``
    # or: from bench._table import print_table  (when run as ``python -m bench.x``)

    print_table("AEAD seal", ["size", "raw MB/s", "hdsvault MB/s", "ratio"],
                [["1 KiB", 410.2, 380.9, 0.93]])

Cells may be any objects: floats are printed with a precision suited to their magnitude,
everything else with ``str``. Columns whose cells are all numbers are right-aligned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table

__all__ = ["fmt", "print_table"]

_console = Console()


def fmt(value: object) -> str:
    """How a cell is printed: ``1,234`` / ``12.3`` / ``0.93`` / ``str(value)``."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def print_table(
    title: str,
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    caption: str | None = None,
) -> None:
    """Print ``rows`` under ``headers`` as a titled table (``caption`` goes underneath)."""
    materialised = [list(row) for row in rows]
    for row in materialised:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells, expected {len(headers)}")
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for i, header in enumerate(headers):
        numeric = bool(materialised) and all(_is_number(row[i]) for row in materialised)
        table.add_column(header, justify="right" if numeric else "left")
    for row in materialised:
        table.add_row(*(fmt(cell) for cell in row))
    _console.print(table)
