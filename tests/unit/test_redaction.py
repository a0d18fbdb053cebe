"""Secrets inside values: URL passwords and Authorization headers (pure)."""

from __future__ import annotations

import pytest

from supervisor.redaction import REDACTED, is_secret, redact_text, redact_value


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://user:pass@host/v2/", "https://user:********@host/v2/"),
        ("http://user:pass@host:5000", "http://user:********@host:5000"),
        ("redis://:pass@cache:6379/0", "redis://:********@cache:6379/0"),
        ("s3+https://key:pass@bucket.example", "s3+https://key:********@bucket.example"),
        ("HTTPS://User:Pass@Host", "HTTPS://User:********@Host"),
    ],
)
def test_a_url_password_is_masked_in_any_scheme(given: str, expected: str) -> None:
    """scheme://user:password@host shows the user and the host, not the password."""
    assert expected == redact_text(given)


def test_a_password_with_an_at_sign_is_masked_up_to_the_host() -> None:
    """The authority ends at its last '@', as Go's url.Parse (the registry's) reads it."""
    assert "https://u:********@host/x" == redact_text("https://u:p@ss@host/x")


def test_every_url_in_a_text_is_masked() -> None:
    """Two URLs in one log line: both passwords go."""
    assert "a https://u:********@h1 b ftp://v:********@h2." == redact_text(
        "a https://u:p1@h1 b ftp://v:p2@h2."
    )


@pytest.mark.parametrize(
    "given",
    [
        "https://user@host/v2/",
        "https://user:@host/v2/",
        "http://host:5000/v2/",
        "ops@example.com",
        "mailto:ops@example.com",
        "registry:5000/library/busybox@sha256:" + "a" * 64,
        "http://host:5000/v2/ and ops@example.com",
    ],
)
def test_text_without_a_url_password_is_left_as_is(given: str) -> None:
    """A user alone, an empty password, an e-mail address or a digest is not mangled."""
    assert given == redact_text(given)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Authorization: [Bearer xyz]", "Authorization: [********]"),
        ("authorization: [Bearer a, Basic b]", "authorization: [********, ********]"),
        (
            '{"Authorization": ["Basic abc"], "X": ["y"]}',
            '{"Authorization": ["********"], "X": ["y"]}',
        ),
        ("{'Authorization': 'Basic abc'}", "{'Authorization': '********'}"),
        ("Authorization: Bearer xyz", "Authorization: ********"),
        ("Proxy-Authorization: Basic abc", "Proxy-Authorization: ********"),
        ("authorization=Bearer xyz", "authorization=********"),
        (
            "map[Accept:[json] Authorization:[Bearer xyz]]",
            "map[Accept:[json] Authorization:[********]]",
        ),
        (
            "headers:\n  Authorization:\n    - Bearer xyz\n  Accept:\n    - json",
            "headers:\n  Authorization:\n    - ********\n  Accept:\n    - json",
        ),
    ],
)
def test_an_authorization_value_is_masked_in_any_shape(given: str, expected: str) -> None:
    """YAML flow and block lists, JSON, a header line: each item masked, the shape kept."""
    assert expected == redact_text(given)


def test_a_notifications_endpoint_loses_both_of_its_secrets() -> None:
    """A REGISTRY_NOTIFICATIONS_ENDPOINTS value: the URL password and the header go."""
    given = (
        "- name: hook\n  url: https://u:pw@hook.example/events\n"
        "  headers:\n    Authorization: [Bearer abc]\n  timeout: 1s\n"
    )
    expected = (
        "- name: hook\n  url: https://u:********@hook.example/events\n"
        "  headers:\n    Authorization: [********]\n  timeout: 1s\n"
    )
    assert expected == redact_value("REGISTRY_NOTIFICATIONS_ENDPOINTS", given)


def test_the_word_authorization_in_prose_is_left_as_is() -> None:
    """Only "Authorization:" or "Authorization=" introduces a value to mask."""
    assert "the authorization failed" == redact_text("the authorization failed")


@pytest.mark.parametrize(
    "name",
    [
        "REGISTRY_NOTIFICATIONS_ENDPOINTS_0_HEADERS_AUTHORIZATION",
        "authorization",
        "REGISTRY_HTTP_SECRET",
        "REGISTRY_PROXY_PASSWORD",
    ],
)
def test_a_secret_name_hides_the_whole_value(name: str) -> None:
    """A variable named like a secret shows no part of its value."""
    assert REDACTED == redact_value(name, "Bearer xyz")


def test_an_htpasswd_path_is_not_a_secret() -> None:
    """MY_REG_AUTH_HTPASSWD contains PASSWD, but names a file, not a password."""
    assert not is_secret("MY_REG_AUTH_HTPASSWD")
