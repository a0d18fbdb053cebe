"""The image reference grammar of distribution/reference (regexp.go), which the engine
applies: a repository name (optional registry host and port, lowercase path components)
and a tag. Checked at load so that a name the engine refuses is a bad setting, not a 400
from the engine in the middle of `run` (pure).
"""

from __future__ import annotations

import re

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
# As Docker 20.10 (Debian 12's docker.io) splits a name (splitDockerDomain): the first
# component is a registry host only if it has a '.' or a ':port' or is `localhost`; else it
# is a path component and must be lowercase (`Foo/bar`, `LOCALHOST/x`: 400). Its grammar has
# no [IPv6] host either (400 "invalid reference format"); newer engines accept both.
_DOMAIN = (
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})+(?::[0-9]+)?"
    rf"|{_DOMAIN_COMPONENT}:[0-9]+|localhost)"
)
_REPOSITORY = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
# NameTotalLengthMax, counted on the normalised name (docker.io/library/registry).
REPOSITORY_MAX = 255
REPOSITORY_TOO_LONG = (
    f"an image repository name of at most {REPOSITORY_MAX} characters, counted as the "
    "engine names it (registry is docker.io/library/registry)"
)


TAG_EXPECTED = "an image tag: letters, digits, _ . - (at most 128, not starting with . or -)"


def check_repository(value: str) -> str:
    """``value`` if the engine accepts it as MY_REG_IMAGE; else ValueError whose text is
    what was expected (a tag or digest in it, an [IPv6] host, a bad character, the length)."""
    if _REPOSITORY.fullmatch(value):
        if len(normalised_repository(value)) > REPOSITORY_MAX:
            raise ValueError(REPOSITORY_TOO_LONG)
        return value
    name, colon, tag = value.rpartition(":")
    if colon and "/" not in tag and _REPOSITORY.fullmatch(name) and _TAG.fullmatch(tag):
        raise ValueError(
            f"an image repository name without a tag: put the tag in MY_REG_TAG "
            f"(MY_REG_IMAGE={name} MY_REG_TAG={tag})"
        )
    if "@" in value:
        raise ValueError("an image repository name without a digest")
    if value.startswith("["):
        raise ValueError("an image registry host name or IPv4 address, not [IPv6]")
    raise ValueError(
        "an image repository name: lowercase letters, digits and separators (. _ -), "
        "path components split by /, optionally after a registry host[:port]/"
    )


def check_tag(value: str) -> str:
    """``value`` if the engine accepts it as a tag; else ValueError(TAG_EXPECTED)."""
    if not _TAG.fullmatch(value):
        raise ValueError(TAG_EXPECTED)
    return value


def normalised_repository(name: str) -> str:
    """``name`` as the engine normalises it before checking its length (distribution/reference
    normalize.go): docker.io/ before a name without a registry host, library/ for one
    component on Docker Hub, index.docker.io spelled docker.io."""
    host, slash, rest = name.partition("/")
    if not slash or not ("." in host or ":" in host or host == "localhost"):
        host, rest = "docker.io", name
    if host == "index.docker.io":
        host = "docker.io"
    if host == "docker.io" and "/" not in rest:
        rest = f"library/{rest}"
    return f"{host}/{rest}"
