"""Plain-text tables for the terminal: the one layout ``zoo list``, ``zoo cache`` and the
evaluation leaderboard print."""

from __future__ import annotations


def text_table(rows: list[list[str]], headers: list[str]) -> str:
    """Left-aligned columns under a rule of dashes, two spaces apart."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
