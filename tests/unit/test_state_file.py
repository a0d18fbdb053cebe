"""The state file `status` reads: atomic, written on change, rate-limited (no engine)."""

from __future__ import annotations

import stat
from pathlib import Path

from supervisor.state import StateFile, read_json, write_json


def test_first_offer_writes_the_file_0600(tmp_path: Path) -> None:
    """The first content offered is written at once, readable only by its owner."""
    path = tmp_path / "state" / "state-x.json"
    assert StateFile(path).offer(0.0, {"phase": "healthy"}) is True
    assert {"phase": "healthy"} == read_json(path)
    assert 0o600 == stat.S_IMODE(path.stat().st_mode)


def test_unchanged_content_is_not_rewritten_until_the_refresh(tmp_path: Path) -> None:
    """Same content (the timestamp aside) is written again only after refresh_s."""
    writer = StateFile(tmp_path / "s.json", min_interval_s=2.0, refresh_s=60.0)
    writer.offer(0.0, {"phase": "healthy", "updated_at": "a"})
    assert writer.offer(30.0, {"phase": "healthy", "updated_at": "b"}) is False
    assert writer.offer(60.0, {"phase": "healthy", "updated_at": "c"}) is True


def test_a_change_waits_for_the_minimum_interval(tmp_path: Path) -> None:
    """A change right after a write waits min_interval_s; then it is written."""
    path = tmp_path / "s.json"
    writer = StateFile(path, min_interval_s=2.0)
    writer.offer(0.0, {"restarts": 0})
    assert writer.offer(1.0, {"restarts": 1}) is False
    assert writer.offer(2.5, {"restarts": 1}) is True
    assert {"restarts": 1} == read_json(path)


def test_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    """The file is replaced by rename: only the final file remains."""
    write_json(tmp_path / "s.json", {"a": 1})
    write_json(tmp_path / "s.json", {"a": 2})
    assert ["s.json"] == [p.name for p in tmp_path.iterdir()]


def test_missing_or_garbled_file_reads_as_none(tmp_path: Path) -> None:
    """A state file that is absent, not JSON or not an object reads as None."""
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1]")
    assert [None, None, None] == [
        read_json(tmp_path / name) for name in ("absent.json", "bad.json", "list.json")
    ]
