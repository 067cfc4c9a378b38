"""Numbers as people read them: byte sizes and large counts, for every view (cells, panel, picker, progress)."""

from __future__ import annotations


def format_bytes(value: float) -> str:
    """``999 B``, ``1.5 kB``, ``270.1 MB``, ``2.4 GB`` (decimal units, as the hub and disk tools show sizes)."""
    for unit in ("B", "kB", "MB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def format_count(value: float) -> str:
    """``950``, ``1.5k``, ``134.5M``, ``7B``: parameter and download counts."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}".rstrip("0").rstrip(".") + unit
    return str(int(value))
