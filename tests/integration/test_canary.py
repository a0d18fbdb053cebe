"""The push canary against the real engine and the real registry image: it passes on a
healthy registry, stays out of /v2/_catalog, does not grow the data dir, degrades (never
restarts) when storage refuses writes and recovers once it takes them again, and uses its
credentials file under auth."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from support.process import EX_CONFIG, EX_OK

from supervisor import canary
from supervisor.adapters.registry_api import RegistryApi

pytestmark = pytest.mark.integration

# A round every second (and a retry as soon: min(30 s, the interval)); rounds logged.
CANARY_FAST = {"MY_REG_CANARY_INTERVAL": "1", "MY_REG_LOG_LEVEL": "debug"}
ROUNDS_TIMEOUT = 45.0
USER, PASSWORD = "rs-canary-user", "rs-canary-password-1"


def wait_rounds(sup, count: int, *, since: int = 0, result: str = "passed") -> None:
    """Wait until ``count`` canary rounds with ``result`` were logged after ``since``."""
    deadline = time.monotonic() + ROUNDS_TIMEOUT
    while len(sup.find("canary.round", since=since, result=result)) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"fewer than {count} {result} canary rounds; stderr:\n{sup.tail()}")
        time.sleep(0.1)


def catalog(deployment) -> list[str]:
    answer = requests.get(f"{deployment.url}_catalog", timeout=5)
    assert 200 == answer.status_code
    repositories: list[str] = answer.json()["repositories"]
    return repositories


def files_under(root: Path) -> set[str]:
    """Every file under ``root``, by relative path (none if it does not exist)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def htpasswd(deployment) -> Path:
    path = deployment.root / "htpasswd"
    subprocess.run(
        [sys.executable, "-m", "supervisor", "htpasswd", USER, "--file", str(path)],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return path


def credentials(deployment, mode: int = 0o600) -> Path:
    path = deployment.root / "canary.credentials"
    path.write_text(f"{USER}:{PASSWORD}\n")
    path.chmod(mode)
    return path


@pytest.mark.both_layouts
def test_the_canary_passes_and_its_repository_is_not_in_the_catalog(deployment):
    """On a healthy registry the canary's rounds pass, and /v2/_catalog lists what clients
    pushed, never the canary's reserved repository."""
    deployment.write_env(**CANARY_FAST)
    sup = deployment.start()

    wait_rounds(sup, 2)
    image = deployment.push_image()

    assert [image.repository] == catalog(deployment)
    assert canary.REPOSITORY not in catalog(deployment)
    assert [] == sup.find("canary.failed")


def test_canary_rounds_do_not_grow_the_data_dir(deployment):
    """Round after round, the data dir holds the same files: no blob and no upload left."""
    deployment.write_env(**CANARY_FAST)
    sup = deployment.start()
    wait_rounds(sup, 2)
    v2 = deployment.data_dir / "docker" / "registry" / "v2"
    before, blobs_before = files_under(v2), files_under(v2 / "blobs")

    wait_rounds(sup, 5)

    assert before == files_under(v2)
    assert blobs_before == files_under(v2 / "blobs")
    uploads = v2 / "repositories" / canary.REPOSITORY / "_uploads"
    assert [] == list(uploads.iterdir())


def test_storage_that_refuses_writes_degrades_the_registry_and_recovers(deployment):
    """Storage directories the capability-less registry cannot write (while /v2/ still
    answers 200): the canary fails, the registry is degraded with pushes failing and is not
    restarted; writable again, the canary passes and the registry is healthy."""
    deployment.write_env(**CANARY_FAST)
    sup = deployment.start()
    wait_rounds(sup, 1)
    v2 = deployment.data_dir / "docker" / "registry" / "v2"
    modes = {path: stat.S_IMODE(path.stat().st_mode) for path in [v2, *v2.rglob("*")]}
    since = sup.mark()

    try:
        for path in modes:
            if path.is_dir():
                path.chmod(0o555)
        degraded = sup.wait_for_event("registry.degraded", since=since, source="canary")
        assert 200 == deployment.v2_status()
    finally:
        for path, mode in modes.items():
            path.chmod(mode)

    assert degraded["detail"].startswith("pushes failing (HTTP 500 on "), degraded
    failed = sup.find("canary.failed", since=since)[0]
    assert failed["reason"] in degraded["detail"]
    sup.wait_for_event("registry.recovered", since=since, source="canary")
    assert [] == sup.find("container.restarting", since=since)


def test_under_auth_the_canary_uses_its_credentials_file(deployment):
    """With MY_REG_AUTH_HTPASSWD and MY_REG_CANARY_CREDENTIALS (root's, 0600), rounds pass."""
    deployment.write_env(
        MY_REG_AUTH_HTPASSWD=str(htpasswd(deployment)),
        MY_REG_CANARY_CREDENTIALS=str(credentials(deployment)),
        **CANARY_FAST,
    )
    sup = deployment.start()

    wait_rounds(sup, 2)

    assert [] == sup.find("canary.failed")


def test_check_says_the_canary_is_off_under_auth_without_credentials(deployment):
    """Under auth without MY_REG_CANARY_CREDENTIALS, `check` says the canary is off, and why."""
    deployment.write_env(MY_REG_AUTH_HTPASSWD=str(htpasswd(deployment)))

    done = deployment.cli("check", "--env-file", str(deployment.env_file))

    assert EX_OK == done.returncode, done.stderr
    assert "# canary: off: auth is on and MY_REG_CANARY_CREDENTIALS is not set" in done.stdout


def test_check_says_the_canary_is_on_and_how_it_writes(deployment):
    """Without auth, `check` says the canary is on, how often, and how a round writes."""
    done = deployment.cli("check", "--env-file", str(deployment.env_file))

    assert EX_OK == done.returncode, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("# canary: "))
    assert line.startswith("# canary: on, every 300 s: writes one blob into an upload session")


def test_a_credentials_file_others_can_read_is_a_bad_setting(deployment):
    """A credentials file of mode 0644 is refused: one line, exit 78."""
    deployment.write_env(
        MY_REG_AUTH_HTPASSWD=str(htpasswd(deployment)),
        MY_REG_CANARY_CREDENTIALS=str(credentials(deployment, 0o644)),
    )

    done = deployment.cli("check", "--env-file", str(deployment.env_file))

    assert EX_CONFIG == done.returncode
    assert 1 == len(done.stderr.strip().splitlines()), done.stderr
    assert "MY_REG_CANARY_CREDENTIALS" in done.stderr
    assert "mode 0644; it must be 0600 or stricter" in done.stderr


def test_a_commit_round_works_on_the_real_registry_which_then_lists_the_repository(deployment):
    """Commit mode (3.x) against the real 2.8 binary: upload, commit, read back pass; and
    2.8's catalog then lists the repository (a blob link makes one), which is why 2.x gets
    session mode."""
    deployment.write_env(MY_REG_CANARY_INTERVAL="0")
    deployment.start()
    api = RegistryApi(deployment.url)
    try:
        api.commit(canary.REPOSITORY, canary.BLOB, canary.DIGEST, 5.0)
        api.commit(canary.REPOSITORY, canary.BLOB, canary.DIGEST, 5.0)
    finally:
        api.close()

    blobs = deployment.data_dir / "docker" / "registry" / "v2" / "blobs"
    assert 1 == len(files_under(blobs))  # the same digest twice: one blob
    assert [canary.REPOSITORY] == catalog(deployment)
