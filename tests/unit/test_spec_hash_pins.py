"""Today's spec hashes, pinned: an upgrade of registry-supervisor must not replace any
deployed container. A container whose label hash differs from the derived one is
recreated (reconcile.decide), so a refactor that changes a hash by accident would
restart every registry in the field on upgrade. Change these only with a release note."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.layout import V2_LAYOUT, V3_LAYOUT, ImageLayout
from supervisor.settings import load_settings
from supervisor.spec import derive_spec, holder_spec

SEED = "MY_REG_NAME=my_registry\nMY_REG_PORT=5001\nMY_REG_DIR=/var/lib/my_registry\n"
TUNED = (
    "MY_REG_DIR=/srv/reg\nMY_REG_PORT=5443\nMY_REG_BIND=127.0.0.1\nMY_REG_TAG=2.8.3\n"
    "MY_REG_MEMORY=512m\nREGISTRY_LOG_LEVEL=info\nREGISTRY_STORAGE_DELETE_ENABLED=true\n"
)


@pytest.mark.parametrize(
    ("env", "layout", "registry_hash", "holder_hash"),
    [
        ("", V2_LAYOUT, "c7790c369811cdef", "339d3a7f1b8da64f"),
        ("", V3_LAYOUT, "cf4c96c4daae0119", "339d3a7f1b8da64f"),
        (SEED, V2_LAYOUT, "c7790c369811cdef", "339d3a7f1b8da64f"),
        (SEED, V3_LAYOUT, "cf4c96c4daae0119", "339d3a7f1b8da64f"),
        (TUNED, V2_LAYOUT, "e5b64cd13629974d", "3b8bc5deab932312"),
        (TUNED, V3_LAYOUT, "e5b64cd13629974d", "3b8bc5deab932312"),
    ],
    ids=["defaults-v2", "defaults-v3", "seed-v2", "seed-v3", "tuned-v2", "tuned-v3"],
)
def test_spec_hashes_are_todays(
    tmp_path: Path, env: str, layout: ImageLayout, registry_hash: str, holder_hash: str
) -> None:
    """The registry's and the holder's hashes for a few settings are those of 0.1.0."""
    env_file = tmp_path / "registry.env"
    env_file.write_text(env)
    spec = derive_spec(load_settings(env_file), layout)
    assert (registry_hash, holder_hash) == (spec.spec_hash, holder_spec(spec).spec_hash)
