"""The push canary's pure parts: what it writes, which mode a registry version gets, when
it is off and why, and its settings (interval, credentials file)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from supervisor import canary, credentials_file
from supervisor.errors import ConfigError
from supervisor.layout import parse_version
from supervisor.settings import load_settings


def settings_from(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "registry.env"
    path.write_text(text)
    return load_settings(path)


def problems_for(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "registry.env"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value.problems


def credentials(tmp_path: Path, text: str = "canary:s3cret\n", mode: int = 0o600) -> Path:
    path = tmp_path / "canary.credentials"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_every_round_writes_the_same_bytes_under_the_same_digest() -> None:
    """The blob and its digest are constants: storage holds one blob whatever the rounds."""
    assert "sha256:" + hashlib.sha256(canary.BLOB).hexdigest() == canary.DIGEST


@pytest.mark.parametrize(
    ("output", "mode"),
    [
        ("/bin/registry github.com/distribution/distribution/v3 v3.0.0", canary.Mode.COMMIT),
        ("/bin/registry github.com/distribution/distribution/v3 3.1.1", canary.Mode.COMMIT),
        ("/bin/registry github.com/docker/distribution 2.8.2+ds1", canary.Mode.SESSION),
    ],
)
def test_the_mode_follows_what_the_catalog_counts(output: str, mode: canary.Mode) -> None:
    """3.x lists repositories with manifests only: commit; 2.x lists any with a blob link:
    an upload session."""
    assert mode is canary.mode_for(parse_version(output))


def test_an_unknown_version_gets_the_mode_that_never_lists_the_canary() -> None:
    """Without a version, the canary never commits a blob."""
    assert canary.Mode.SESSION is canary.mode_for(None)


def test_the_canary_is_on_by_default(tmp_path: Path) -> None:
    """No auth, the default interval: on, every 300 s."""
    settings = settings_from(tmp_path, "")
    assert (300.0, None) == (settings.canary_interval, canary.off_reason(settings))


def test_interval_zero_turns_it_off(tmp_path: Path) -> None:
    """MY_REG_CANARY_INTERVAL=0: off, and check says so."""
    settings = settings_from(tmp_path, "MY_REG_CANARY_INTERVAL=0\n")
    assert "off: MY_REG_CANARY_INTERVAL=0" == canary.describe(settings, None)


def test_under_htpasswd_auth_without_credentials_it_is_off(tmp_path: Path) -> None:
    """Auth on, no credentials file: off, saying why."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("u:$2y$05$" + "a" * 53 + "\n")
    settings = settings_from(tmp_path, f"MY_REG_AUTH_HTPASSWD={htpasswd}\n")
    assert "auth is on and MY_REG_CANARY_CREDENTIALS is not set" == canary.off_reason(settings)


def test_under_registry_auth_without_credentials_it_is_off(tmp_path: Path) -> None:
    """REGISTRY_AUTH set by hand (token auth, say), no credentials: off."""
    settings = settings_from(tmp_path, "REGISTRY_AUTH=token\n")
    assert "REGISTRY_AUTH is set and MY_REG_CANARY_CREDENTIALS is not set" == canary.off_reason(
        settings
    )


def test_with_credentials_it_is_on_and_says_as_whom(tmp_path: Path) -> None:
    """A credentials file turns it on under auth."""
    path = credentials(tmp_path)
    settings = settings_from(
        tmp_path, f"REGISTRY_AUTH=htpasswd\nMY_REG_CANARY_CREDENTIALS={path}\n"
    )
    line = canary.describe(
        settings, parse_version("/bin/registry github.com/distribution/distribution/v3 v3.0.0")
    )
    assert line.startswith("on, every 300 s, as the user of MY_REG_CANARY_CREDENTIALS: uploads")


@pytest.mark.parametrize("value", ["-1", "abc", "86401", "nan"])
def test_a_bad_interval_is_one_line(tmp_path: Path, value: str) -> None:
    """Like the other seconds settings: one line naming the variable and what is expected."""
    assert [
        f"MY_REG_CANARY_INTERVAL={value!r}: expected a number of seconds from 0 to 86400 (0: off)"
    ] == problems_for(tmp_path, f"MY_REG_CANARY_INTERVAL={value}\n")


def test_credentials_are_read_from_one_user_password_line(tmp_path: Path) -> None:
    """The file's one line is the user and the password (which may hold a colon)."""
    read = credentials_file.read(credentials(tmp_path, "canary:pa:ss\n"))
    assert ("canary", "pa:ss") == (read.user, read.password)
    assert "pa:ss" not in repr(read)


@pytest.mark.parametrize(
    ("text", "mode", "why"),
    [
        ("canary:s3cret\n", 0o640, "mode 0640; it must be 0600 or stricter"),
        ("canary:s3cret\n", 0o604, "mode 0604; it must be 0600 or stricter"),
        ("canary\n", 0o600, "expected one user:password line"),
        ("a:b\nc:d\n", 0o600, "expected exactly one user:password line"),
        ("", 0o600, "expected exactly one user:password line"),
    ],
)
def test_a_bad_credentials_file_is_refused(tmp_path: Path, text: str, mode: int, why: str) -> None:
    """Looser than 0600, or not one user:password line: one line, the reason in it."""
    path = credentials(tmp_path, text, mode)
    [problem] = problems_for(tmp_path, f"MY_REG_CANARY_CREDENTIALS={path}\n")
    assert problem.startswith("MY_REG_CANARY_CREDENTIALS=")
    assert problem.endswith(f"({path}: {why})")


def test_a_credentials_file_not_owned_by_root_is_refused(tmp_path: Path) -> None:
    """Owned by another user, the file is refused even at 0600."""
    path = credentials(tmp_path)
    os.chown(path, 1000, 1000)
    with pytest.raises(credentials_file.CredentialsError, match="owned by uid 1000, not root"):
        credentials_file.read(path)


def test_a_symlinked_credentials_file_is_refused(tmp_path: Path) -> None:
    """A symlink is never followed."""
    link = tmp_path / "link"
    link.symlink_to(credentials(tmp_path))
    with pytest.raises(credentials_file.CredentialsError, match="symlink is refused"):
        credentials_file.read(link)


def test_a_failure_is_one_short_phrase() -> None:
    """What STATUS shows after "pushes failing"."""
    assert "HTTP 500 on PUT blob" == canary.failure("PUT blob", 500)
    assert "digest mismatch on GET blob" == canary.failure("GET blob", None, "digest mismatch")
