"""Placeholder until the storage module lands (helper branch fleet-storage)."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisor.settings import Settings


def storage_fingerprint(settings: Settings, key: bytes) -> str:
    """HMAC of the storage settings (temporary)."""
    items = sorted(
        (k.upper(), v)
        for k, v in settings.registry_env.items()
        if k.upper().startswith("REGISTRY_STORAGE")
    )
    return hmac.new(key, repr(items).encode(), hashlib.sha256).hexdigest()[:16]
