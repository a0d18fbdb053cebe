"""The state file `status` reads: atomic, written on change, rate-limited (no engine)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from supervisor.statedir.state_file import StateFile, ensure_private_dir, read_json, write_json


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


def temporary_path(path: Path) -> Path:
    """Where write_json puts its temporary file in this process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def test_a_leftover_temporary_file_is_replaced(tmp_path: Path) -> None:
    """A temporary file left by a crash mid-write is removed, and the write succeeds."""
    path = tmp_path / "s.json"
    temporary_path(path).write_text('{"half": ')
    write_json(path, {"a": 1})
    assert ({"a": 1}, ["s.json"]) == (read_json(path), [p.name for p in tmp_path.iterdir()])


def test_a_symlink_at_the_temporary_path_is_never_followed(tmp_path: Path) -> None:
    """A symlink planted at the temporary path is removed, its target left untouched."""
    state_dir, target = tmp_path / "state", tmp_path / "elsewhere"
    state_dir.mkdir()
    target.write_text("precious\n")
    path = state_dir / "s.json"
    temporary_path(path).symlink_to(target)
    write_json(path, {"a": 1})
    assert "precious\n" == target.read_text()
    assert (False, {"a": 1}) == (path.is_symlink(), read_json(path))
    assert ["s.json"] == [p.name for p in state_dir.iterdir()]


def test_a_new_state_dir_is_made_0700(tmp_path: Path) -> None:
    """A missing state dir is created, only its owner may enter it."""
    ensure_private_dir(tmp_path / "state")
    assert 0o700 == stat.S_IMODE((tmp_path / "state").stat().st_mode)


def test_a_looser_state_dir_is_tightened_to_0700_on_write(tmp_path: Path) -> None:
    """A state dir that exists 0755 (made by hand) is 0700 after the next write."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    state_dir.chmod(0o755)
    write_json(state_dir / "s.json", {"a": 1})
    assert 0o700 == stat.S_IMODE(state_dir.stat().st_mode)
