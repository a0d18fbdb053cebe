"""The push canary: what it writes, how, and whether it runs (pure).

The canary proves that the registry still accepts a write while ``/v2/`` answers 200
(a registry whose storage refuses writes answers ``/v2/`` all the same). It must neither
grow the storage nor show a repository to clients, and what the registry counts as a
repository differs by version (read in distribution's ``registry/storage/catalog.go``):

- 3.x (``handleRepository``, catalog.go:154 at v3.1.1; commit a784441b6, first in
  v3.0.0): a directory is a repository when it holds ``_manifests``. A blob linked into
  a repository (``_layers``) without a manifest is not listed, so the canary uploads its
  blob, commits it and reads it back (``Mode.COMMIT``). The same bytes every time: the
  second commit finds the blob stored and writes no data (blobwriter.go ``moveBlob``),
  the link is rewritten in place, and no manifest refers to the blob, so `gc` may sweep
  it (the next round uploads it again).
- 2.x (catalog.go:146 at v2.8.3): any directory holding ``_layers`` is a repository, so
  one committed blob would list the canary in ``GET /v2/_catalog`` for good. There the
  canary opens an upload session, writes its bytes into it, asks the registry how many
  bytes it holds (``Range``), and cancels the session (``Mode.SESSION``); nothing is
  committed and no ``_layers`` is made. 2.8's cancel leaves the session's directory
  behind (the upload handler closes the upload after the cancel and so writes its hash
  state again, handlers/blobupload.go:79, and without ``startedat`` the registry's
  upload purger never removes it, purgeuploads.go:24): the supervisor removes that one
  directory from MY_REG_DIR itself.

What it does not prove: on 3.x, after the first round, that new blob data can be stored
(the data is already there); on 2.x, that a commit works or that the blob store
(``docker/registry/v2/blobs``) is writable, nor that stored bytes read back. Neither
mode pushes a manifest.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum

from supervisor.layout import RegistryVersion
from supervisor.settings import Settings

# Reserved for the canary: a name no one pushes to (the registry's name grammar allows it).
REPOSITORY = "registry-supervisor-canary"
BLOB = b"registry-supervisor canary: this blob is the same on every round\n"
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
# While pushes fail, try again this much sooner than MY_REG_CANARY_INTERVAL (never later).
RETRY_S = 30.0
# What an upload id looks like (2.x and 3.x make UUIDs): a path component, never more.
UPLOAD_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Mode(StrEnum):
    """How a round writes: commit a blob (3.x), or an upload session cancelled (2.x)."""

    COMMIT = "commit"
    SESSION = "session"

    @property
    def describe(self) -> str:
        """What a round of this mode does, for `check` and the log."""
        if self is Mode.COMMIT:
            return "uploads one blob, commits it and reads it back"
        return (
            "writes one blob into an upload session, reads back its size and cancels it "
            "(registry 2.x lists any repository holding a blob in /v2/_catalog)"
        )


def mode_for(version: RegistryVersion | None) -> Mode:
    """COMMIT where the catalog counts manifests only (3.x); SESSION otherwise, also for
    an unknown version: the mode that can never list the canary."""
    if version is not None and version.major >= 3:
        return Mode.COMMIT
    return Mode.SESSION


def off_reason(settings: Settings) -> str | None:
    """Why the canary does not run with these settings; None: it runs."""
    if settings.canary_interval == 0:
        return "MY_REG_CANARY_INTERVAL=0"
    if settings.canary_credentials is not None:
        return None
    if settings.auth_htpasswd is not None:
        return "auth is on and MY_REG_CANARY_CREDENTIALS is not set"
    auth = sorted(key for key in settings.registry_env if key.upper().startswith("REGISTRY_AUTH"))
    if auth:
        return f"{auth[0]} is set and MY_REG_CANARY_CREDENTIALS is not set"
    return None


def describe(settings: Settings, version: RegistryVersion | None) -> str:
    """`check`'s line: ``on, every 300 s, ...`` or ``off: why``."""
    why = off_reason(settings)
    if why is not None:
        return f"off: {why}"
    mode = mode_for(version)
    who = ""
    if settings.canary_credentials is not None:
        who = ", as the user of MY_REG_CANARY_CREDENTIALS"
    every = f"{settings.canary_interval:g} s"
    known = "" if version is not None else " (registry version unknown until run)"
    return f"on, every {every}{who}: {mode.describe}{known}, in {REPOSITORY}"


def failure(step: str, status: int | None, detail: str = "") -> str:
    """The short reason STATUS shows: ``HTTP 500 on PUT blob``, ``digest mismatch on GET
    blob``."""
    what = f"HTTP {status}" if status is not None else detail
    return f"{what} on {step}"
