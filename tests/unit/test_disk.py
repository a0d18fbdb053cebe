"""Disk guard (pure), the bounded size walk and byte formatting."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.adapters.disk import Crossing, DiskGuard, human_bytes, tree_size, usage


def test_guard_reports_each_crossing_once() -> None:
    """Falling below the threshold is reported once, and so is recovering."""
    guard = DiskGuard(5.0)
    assert [None, Crossing.LOW, None, Crossing.RECOVERED, None] == [
        guard.update(percent) for percent in (50.0, 4.0, 3.0, 6.0, 7.0)
    ]


def test_guard_at_zero_never_warns() -> None:
    """MY_REG_MIN_FREE=0 turns the warning off."""
    guard = DiskGuard(0.0)
    assert (None, False) == (guard.update(0.0), guard.low)


def test_note_while_low_names_the_free_space_and_gc() -> None:
    """The STATUS suffix says how much is free and what to run."""
    guard = DiskGuard(5.0)
    assert guard.note() is None
    guard.update(3.25)
    assert "disk low: 3.2% free (< 5%), consider registry-supervisor gc" == guard.note()


def test_tree_size_counts_allocated_bytes_of_files(tmp_path: Path) -> None:
    """Files in nested directories are counted; symlinks are not followed."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "blob").write_bytes(b"x" * 10000)
    (tmp_path / "top").write_bytes(b"y" * 100)
    (tmp_path / "link").symlink_to("/usr")
    size = tree_size(tmp_path)
    assert (2, True) == (size.files, size.complete)
    assert size.bytes >= 10000


def test_tree_size_stops_at_its_bound(tmp_path: Path) -> None:
    """A walk that hits max_entries says it is incomplete."""
    for index in range(5):
        (tmp_path / f"f{index}").write_bytes(b"z")
    assert tree_size(tmp_path, max_entries=2).complete is False


def test_usage_of_a_real_directory(tmp_path: Path) -> None:
    """usage() reads the file system's total and free space."""
    measured = usage(tmp_path)
    assert 0 < measured.free <= measured.total
    assert 0.0 <= measured.free_percent <= 100.0


@pytest.mark.parametrize(
    ("count", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 << 30, "5.0 GiB")]
)
def test_human_bytes(count: int, text: str) -> None:
    """Sizes are shown in binary units with one decimal."""
    assert text == human_bytes(count)


def test_note_says_what_gc_would_free_once_estimated() -> None:
    """With the dry run's estimate in, STATUS says how much gc would free."""
    guard = DiskGuard(5)
    guard.update(2.0)
    guard.reclaimable = 3 * 1024 * 1024
    assert "disk low: 2.0% free (< 5%), gc would free 3.0 MiB" == guard.note()


def test_a_new_crossing_forgets_the_old_estimate() -> None:
    """Recovered then low again: the estimate is made afresh."""
    guard = DiskGuard(5)
    guard.update(2.0)
    guard.reclaimable = 1
    guard.update(50.0)
    guard.update(2.0)
    assert guard.reclaimable is None
