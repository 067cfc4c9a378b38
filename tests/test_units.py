"""Byte sizes and counts as the views print them."""

from __future__ import annotations

from hf_magic.notebook.units import format_bytes, format_count


def test_format_bytes_picks_the_largest_unit_below_1000() -> None:
    assert format_bytes(999) == "999 B"
    assert format_bytes(1_500) == "1.5 kB"
    assert format_bytes(270_100_000) == "270.1 MB"
    assert format_bytes(2_400_000_000) == "2.4 GB"
    assert format_bytes(3_000_000_000_000) == "3000.0 GB"  # GB is the largest unit a model size needs


def test_format_count_shortens_large_numbers() -> None:
    assert [format_count(n) for n in (950, 1_500, 134_515_008, 7_000_000_000)] == ["950", "1.5k", "134.5M", "7B"]
