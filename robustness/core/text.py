"""Aligned Markdown tables: the one table formatter, for terminals and every report."""

from __future__ import annotations

from collections.abc import Sequence


def figure(value: float) -> str:
    """A measured figure with three significant digits, never in exponent notation from
    1,000 up: ``0.0125``, ``0.898``, ``174``, ``2050``."""
    return f"{value:.0f}" if 999.5 <= abs(value) < 1e15 else f"{value:.3g}"


def _cell(value: object, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *,
                   digits: int = 3) -> str:
    """Render rows as a GitHub-flavoured Markdown table, columns padded to align.

    Floats are shown with ``digits`` decimals, ``None`` as ``-``; numbers are right-aligned.
    """
    text = [[_cell(v, digits) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text)]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(r[i], int | float) or r[i] is None for r in rows)
               for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric,
                                                                           strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric, strict=True)) + "|"
    return "\n".join([line(list(headers)), rule, *(line(r) for r in text)])
