"""Secrets kept out of what we print and log: by a variable's name, and inside values (pure).

Two rules, applied by ``check`` (settings.effective), by error lines (settings._problems)
and by every log event (log.redact_secrets):

- a variable whose *name* marks a secret (``is_secret``) shows no value at all;
- any other value, or any text, has the secrets *inside* it masked (``redact_text``):
  the password of a URL's userinfo, and the value of an ``Authorization`` header.

This is a regex-level filter for text we produce or pass on, not a parser: it errs on
the side of masking a little too much (the rest of a line after ``Authorization:``).
"""

from __future__ import annotations

import re

REDACTED = "********"
# Variable names that mark a secret; their values are never logged or printed.
SECRET_MARKERS = (
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "TOKEN",
    "CREDENTIAL",
    "ACCESSKEY",
    "ACCOUNTKEY",
    "AUTHORIZATION",
    # OTEL_EXPORTER_OTLP_HEADERS=x-honeycomb-team=KEY, notification endpoint headers: API
    # keys travel in headers under any name.
    "HEADERS",
)

# scheme://user:password@host: the password, up to the last '@' before the path (where
# Go's url.Parse, the registry's, splits the authority). "user@host" alone (no ':') is
# left as is, as is an e-mail address (no scheme). An empty password has nothing to hide.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/?#@\s:]*:)(?P<password>[^/?#\s]+)(?=@)",
    # ASCII: URL schemes and header names are ASCII, and case-folding all of Unicode
    # costs this pattern a quarter MiB of RSS for nothing.
    re.IGNORECASE | re.ASCII,
)

# An Authorization header's value, in the shapes REGISTRY_NOTIFICATIONS_* and log lines
# carry it: "Authorization: [Bearer x]" (YAML flow), '"Authorization": ["Basic x"]' (JSON),
# "Authorization: Bearer x" (a header line), "authorization=..." and a YAML block list
# ("Authorization:" then "- Bearer x" lines). The name may be a suffix
# (Proxy-Authorization, ..._HEADERS_AUTHORIZATION).
_AUTHORIZATION = re.compile(
    r"""
    (?P<key>(?<![a-z])authorization["']?[ \t]*[:=][ \t]*)
    (?P<value>
        \[[^\]\r\n]*\]                          # a flow list: [Bearer x], ["Basic x", "..."]
      | "[^"\r\n]*" | '[^'\r\n]*'               # a quoted string
      | (?:[ \t]*\r?\n[ \t]*-[ \t]*[^\r\n]*)+   # a YAML block list, one "- item" a line
      | [^\s,;{}\[\]"'][^\r\n,;{}\[\]]*         # a plain value, to the end of the line or , ; } ]
    )
    """,
    re.IGNORECASE | re.VERBOSE | re.ASCII,
)
# One item of such a value, its quotes (if any) kept: `Bearer x`, `"Basic x"`, `'x'`.
_ITEM = re.compile(
    r"""(?P<quote>["']?)(?P<item>[^\s,"'\[\]-](?:[^,"'\[\]\r\n]*[^\s,"'\[\]])?)(?P=quote)"""
)


def is_secret(name: str) -> bool:
    """Whether a variable (or log key) named ``name`` holds a secret: its value is never shown."""
    # An htpasswd file's path and realm are not secrets (the hashes in it are its own).
    upper = name.upper().replace("HTPASSWD", "")
    return any(marker in upper for marker in SECRET_MARKERS)


def redact_text(text: str) -> str:
    """``text`` with URL passwords and Authorization header values replaced by REDACTED."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}", text)
    return _AUTHORIZATION.sub(_mask_authorization, text)


def redact_value(name: str, value: str) -> str:
    """What may be shown of variable ``name``'s ``value``: nothing of a secret, else redact_text."""
    return REDACTED if is_secret(name) else redact_text(value)


def _mask_authorization(match: re.Match[str]) -> str:
    # Each item becomes REDACTED, keeping brackets, quotes, commas and "- " markers, so a
    # JSON or YAML value keeps its shape: ["Basic x"] -> ["********"].
    masked = _ITEM.sub(lambda m: f"{m['quote']}{REDACTED}{m['quote']}", match["value"])
    return f"{match['key']}{masked}"
