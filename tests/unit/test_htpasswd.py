"""Authentication: the htpasswd file, its validation, the `htpasswd` command, the spec."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import bcrypt
import pytest

from supervisor.cli import main
from supervisor.errors import ConfigError
from supervisor.layout import V2_LAYOUT
from supervisor.ops import htpasswd
from supervisor.settings import load_settings
from supervisor.spec import Mount, derive_spec

# Apache's `htpasswd -m` (MD5): a scheme the registry does not accept.
MD5_ENTRY = "bob:$apr1$Vf0AHJfN$0Bl8BB7yS6tE2SXfDPcqg/"


def hashes(path: Path) -> dict[str, str]:
    return dict(line.split(":", 1) for line in path.read_text().splitlines())


def test_a_new_user_gets_a_bcrypt_entry_in_a_new_0600_file(tmp_path: Path) -> None:
    """The first user creates the file, readable by its owner only, with a bcrypt hash."""
    path = tmp_path / "htpasswd"
    written = htpasswd.set_password(path, "alice", "correct horse", cost=4)
    assert htpasswd.Written(existed=False, created=True) == written
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = hashes(path)["alice"]
    assert entry.startswith("$2b$04$")
    assert bcrypt.checkpw(b"correct horse", entry.encode())


def test_updating_a_user_keeps_the_others_and_the_inode(tmp_path: Path) -> None:
    """A new password replaces the user's line in place: same file, same inode (a running
    registry sees the change through its bind mount), other users untouched."""
    path = tmp_path / "htpasswd"
    htpasswd.set_password(path, "alice", "one", cost=4)
    htpasswd.set_password(path, "bob", "two", cost=4)
    inode, bob = path.stat().st_ino, hashes(path)["bob"]
    assert htpasswd.Written(existed=True, created=False) == htpasswd.set_password(
        path, "alice", "three", cost=4
    )
    assert path.stat().st_ino == inode
    assert list(hashes(path)) == ["alice", "bob"]
    assert hashes(path)["bob"] == bob
    assert bcrypt.checkpw(b"three", hashes(path)["alice"].encode())


def test_a_file_readable_by_others_is_tightened_to_0600(tmp_path: Path) -> None:
    """An existing 0644 file is made 0600 before the new hash goes in, and says so."""
    path = tmp_path / "htpasswd"
    htpasswd.set_password(path, "alice", "one", cost=4)
    path.chmod(0o644)
    written = htpasswd.set_password(path, "bob", "two", cost=4)
    assert (0o644, 0o600) == (written.tightened_from, stat.S_IMODE(path.stat().st_mode))


@pytest.mark.parametrize("target_exists", [True, False])
def test_a_symlink_is_never_written_through(tmp_path: Path, target_exists: bool) -> None:
    """A symlink at the path is refused: its target is neither changed nor created."""
    target, link = tmp_path / "target", tmp_path / "htpasswd"
    if target_exists:
        target.write_text("precious\n")
    link.symlink_to(target)
    with pytest.raises(htpasswd.SymlinkRefused):
        htpasswd.set_password(link, "alice", "pw", cost=4)
    found = target.read_text() if target.exists() else None
    assert ("precious\n" if target_exists else None) == found


@pytest.mark.parametrize("user", ["", "a:b", " alice", "#alice", "tab\there"])
def test_user_names_the_registry_would_misread_are_refused(tmp_path: Path, user: str) -> None:
    """':' splits user from hash, '#' starts a comment, outer spaces are trimmed."""
    with pytest.raises(htpasswd.HtpasswdError):
        htpasswd.set_password(tmp_path / "htpasswd", user, "pw", cost=4)
    assert not (tmp_path / "htpasswd").exists()


@pytest.mark.parametrize("password", ["", "x" * 73, "two\nlines"])
def test_passwords_bcrypt_cannot_keep_are_refused(tmp_path: Path, password: str) -> None:
    """Empty, longer than bcrypt's 72 bytes, or with a line break."""
    with pytest.raises(htpasswd.HtpasswdError):
        htpasswd.set_password(tmp_path / "htpasswd", "alice", password, cost=4)


def test_the_command_reads_the_password_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`htpasswd USER --file F` takes the first line of stdin; the password is not printed."""
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pass\nignored\n"))
    path = tmp_path / "htpasswd"
    assert main(["htpasswd", "alice", "--file", str(path)]) == 0
    out = capsys.readouterr().out
    assert out == f"added user alice in {path} (new file, mode 0600)\n"
    assert bcrypt.checkpw(b"s3cret pass", hashes(path)["alice"].encode())


def test_the_command_says_when_it_tightened_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Updating a user in a 0640 file reports the old mode and the new one."""
    path = tmp_path / "htpasswd"
    htpasswd.set_password(path, "alice", "one", cost=4)
    path.chmod(0o640)
    monkeypatch.setattr("sys.stdin", io.StringIO("two\n"))
    assert main(["htpasswd", "alice", "--file", str(path)]) == 0
    assert f"updated user alice in {path} (mode 0640 tightened to 0600)\n" == (
        capsys.readouterr().out
    )


def test_the_command_refuses_a_symlink_given_as_file_before_asking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--file naming a symlink: exit 78 with one line, and no password prompt at all."""
    link = tmp_path / "htpasswd"
    link.symlink_to(tmp_path / "target")
    prompt_answers(monkeypatch)  # no answers: a prompt would fail the test
    code = main(["htpasswd", "alice", "--file", str(link)])
    assert (
        78,
        f"registry-supervisor: --file {link}: expected the file itself, not a symbolic "
        "link (never written through)\n",
    ) == (code, capsys.readouterr().err)


def test_the_command_refuses_a_symlink_named_by_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """MY_REG_AUTH_HTPASSWD naming a symlink: exit 78, the line names the variable."""
    link = tmp_path / "htpasswd"
    link.symlink_to(tmp_path / "target")
    env_file = tmp_path / "registry.env"
    env_file.write_text(f"MY_REG_AUTH_HTPASSWD={link}\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    code = main(["htpasswd", "alice", "--env-file", str(env_file)])
    assert (
        78,
        f"registry-supervisor: MY_REG_AUTH_HTPASSWD='{link}': expected the file itself, "
        "not a symbolic link (never written through)\n",
    ) == (code, capsys.readouterr().err)
    assert not (tmp_path / "target").exists()


def test_the_command_defaults_to_the_configured_file_even_before_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --file it edits MY_REG_AUTH_HTPASSWD from the env file, which `run` would
    still reject (no such file yet): that is how the first user is made."""
    path = tmp_path / "htpasswd"
    env_file = tmp_path / "registry.env"
    env_file.write_text(f"MY_REG_AUTH_HTPASSWD={path}\n")
    with pytest.raises(ConfigError):
        load_settings(env_file)
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert main(["htpasswd", "alice", "--env-file", str(env_file)]) == 0
    assert load_settings(env_file).auth_htpasswd == path
    assert "alice" in capsys.readouterr().out


def test_the_command_without_a_file_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --file and no MY_REG_AUTH_HTPASSWD: exit 78 saying what to set."""
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert main(["htpasswd", "alice"]) == 78
    assert capsys.readouterr().err == (
        "registry-supervisor: MY_REG_AUTH_HTPASSWD=None: expected an absolute path, "
        "or give --file PATH\n"
    )


def test_the_password_is_never_an_argument() -> None:
    """There is no option that takes a password: argv is visible to every user (ps)."""
    with pytest.raises(SystemExit):
        main(["htpasswd", "alice", "--password", "pw"])


def test_settings_refuse_an_entry_that_is_not_bcrypt(tmp_path: Path) -> None:
    """The registry accepts only bcrypt: an MD5 line is named by its number, not shown."""
    path = tmp_path / "htpasswd"
    htpasswd.set_password(path, "alice", "pw", cost=4)
    path.write_text(path.read_text() + "# a comment\n" + MD5_ENTRY + "\n")
    env_file = tmp_path / "auth.env"
    env_file.write_text(f"MY_REG_AUTH_HTPASSWD={path}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file)
    [line] = caught.value.problems
    assert line.startswith(
        f"MY_REG_AUTH_HTPASSWD='{path}': expected an htpasswd file of bcrypt entries "
        f"({path}: line 3 is not bcrypt"
    )
    assert "apr1" not in line


def test_settings_refuse_an_empty_file(tmp_path: Path) -> None:
    """A file without users would lock everyone out: say how to add one."""
    path = tmp_path / "htpasswd"
    path.write_text("# nobody yet\n")
    env_file = tmp_path / "auth.env"
    env_file.write_text(f"MY_REG_AUTH_HTPASSWD={path}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file)
    assert "add one with `registry-supervisor htpasswd USER`" in caught.value.problems[0]


def test_the_file_is_mounted_read_only_and_htpasswd_auth_configured(tmp_path: Path) -> None:
    """Spec: /auth/htpasswd read-only, REGISTRY_AUTH=htpasswd with realm and path."""
    path = tmp_path / "htpasswd"
    htpasswd.set_password(path, "alice", "pw", cost=4)
    env_file = tmp_path / "auth.env"
    env_file.write_text(f"MY_REG_AUTH_HTPASSWD={path}\n")
    spec = derive_spec(load_settings(env_file), V2_LAYOUT)
    assert Mount(str(path), "/auth/htpasswd", read_only=True) in spec.mounts
    assert {
        "REGISTRY_AUTH": "htpasswd",
        "REGISTRY_AUTH_HTPASSWD_REALM": "registry",
        "REGISTRY_AUTH_HTPASSWD_PATH": "/auth/htpasswd",
    }.items() <= dict(spec.environment).items()


def test_a_file_the_registry_cannot_read_without_capabilities_is_refused(tmp_path: Path) -> None:
    """0600 and owned by a normal user: root in the container, without CAP_DAC_OVERRIDE,
    could not read it; MY_REG_CAP_DROP_ALL=false accepts it."""
    path = tmp_path / "htpasswd"
    htpasswd.set_password(path, "alice", "pw", cost=4)
    if os.geteuid() == 0:
        os.chown(path, 1000, 1000)  # as a normal user the file is that user's already
    env_file = tmp_path / "auth.env"
    env_file.write_text(f"MY_REG_AUTH_HTPASSWD={path}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file)
    [line] = caught.value.problems
    assert line.startswith(f"MY_REG_AUTH_HTPASSWD='{path}': expected {path} to be usable")
    env_file.write_text(f"MY_REG_AUTH_HTPASSWD={path}\nMY_REG_CAP_DROP_ALL=false\n")
    assert load_settings(env_file).auth_htpasswd == path


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def prompt_answers(monkeypatch: pytest.MonkeyPatch, *answers: str | type[BaseException]) -> None:
    """A terminal on stdin; getpass answers in turn (an exception type is raised)."""
    pending = list(answers)

    def fake_getpass(prompt: str = "") -> str:
        answer = pending.pop(0)
        if isinstance(answer, str):
            return answer
        raise answer

    monkeypatch.setattr("sys.stdin", _Terminal())
    monkeypatch.setattr("getpass.getpass", fake_getpass)


def test_on_a_terminal_the_password_is_asked_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two equal answers at the prompt set the password."""
    prompt_answers(monkeypatch, "pw", "pw")
    assert main(["htpasswd", "alice", "--file", str(tmp_path / "htpasswd")]) == 0
    assert bcrypt.checkpw(b"pw", hashes(tmp_path / "htpasswd")["alice"].encode())


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (("pw", "typo"), (78, "registry-supervisor: htpasswd: the two passwords differ\n")),
        ((EOFError,), (78, "registry-supervisor: htpasswd: no password given\n")),
        ((KeyboardInterrupt,), (130, "\n")),
    ],
)
def test_a_prompt_that_ends_badly_writes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answers: tuple[str | type[BaseException], ...],
    expected: tuple[int, str],
) -> None:
    """A mismatch, Ctrl-D or Ctrl-C: a message (no traceback), an exit code, no file."""
    prompt_answers(monkeypatch, *answers)
    code = main(["htpasswd", "alice", "--file", str(tmp_path / "htpasswd")])
    assert expected == (code, capsys.readouterr().err)
    assert not (tmp_path / "htpasswd").exists()
