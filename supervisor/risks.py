"""Security warnings about settings that are valid but risky, and `check`'s summary.

Each warning is a stable log event with fields, plus one human line: the supervisor logs
them at start and on reload, ``check`` prints them, and an expiring certificate also
shows in systemd's STATUS line. ``warnings`` and ``exposure`` are pure; ``certificate``
and ``describe`` read files.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from supervisor import htpasswd_file, tls
from supervisor.settings import FILESYSTEM, Settings, package_managed_dir, storage_of


@dataclass(frozen=True)
class SecurityWarning:
    """One risk: a stable log event, its human line, and the event's fields."""

    event: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)


def certificate(settings: Settings) -> tls.Certificate | None:
    """The configured certificate, or None without TLS (or if it became unreadable)."""
    if settings.tls_certificate is None:
        return None
    try:
        return tls.load_certificate(settings.tls_certificate)
    except ValueError:
        return None


def tls_enabled(settings: Settings) -> bool:
    """Whether the registry speaks TLS, set up by MY_REG_TLS_DIR or by REGISTRY_* itself."""
    return settings.tls or "REGISTRY_HTTP_TLS_CERTIFICATE" in settings.registry_env


def auth_enabled(settings: Settings) -> bool:
    """Whether the registry asks for credentials (MY_REG_AUTH_HTPASSWD or REGISTRY_AUTH*)."""
    return settings.auth_htpasswd is not None or any(
        key.startswith("REGISTRY_AUTH") for key in settings.registry_env
    )


def warnings(
    settings: Settings, certificate: tls.Certificate | None, now: datetime
) -> list[SecurityWarning]:
    """Everything risky about these settings, most severe first."""
    found = (
        exposure(settings)
        + data_dir_warnings(settings)
        + storage_warnings(settings)
        + unset_variable_warnings(settings)
    )
    note = tls.expiry_note(certificate, now)
    if certificate is not None and note is not None:
        found.append(
            SecurityWarning(
                "tls.certificate_expiring",
                f"{note}: {certificate.path} is valid until "
                f"{certificate.not_after:%Y-%m-%d %H:%M} UTC; renew it, then "
                "`systemctl reload registry-supervisor`",
                {
                    "certificate": str(certificate.path),
                    "not_after": certificate.not_after.isoformat(),
                    "days_left": round(certificate.days_left(now), 1),
                },
            )
        )
    return found


def unset_variable_warnings(settings: Settings) -> list[SecurityWarning]:
    """`$NAME` in the env file with NAME set nowhere became blank, as compose warns: under
    systemd the shell's variables are not there, so this is often a surprise."""
    return [
        SecurityWarning(
            "settings.variable_not_set",
            f"env file {where}: the variable is not set, so it became a blank string (set "
            "it, give a default with ${NAME:-default}, or write $$ for a literal $)",
            {"where": where},
        )
        for where in settings.unset_variables
    ]


def storage_warnings(settings: Settings) -> list[SecurityWarning]:
    """In fleet mode, MY_REG_FLEET_SHARED_DIR=true where the registry does not store on
    MY_REG_DIR: harmless, but it says something about this member that is not so."""
    if not (settings.fleet and settings.fleet_shared_dir):
        return []
    storage = storage_of(settings)
    if storage.driver in (FILESYSTEM, None):
        return []  # what it is for; or refused at load (an unknown driver is not shared)
    return [
        SecurityWarning(
            "settings.fleet_shared_dir_unused",
            f"MY_REG_FLEET_SHARED_DIR=true, but the registry stores with the {storage.driver} "
            "driver, not on MY_REG_DIR: the setting has no effect; remove it",
            {"driver": storage.driver},
        )
    ]


def data_dir_warnings(settings: Settings) -> list[SecurityWarning]:
    """A data dir that a Debian package owns (its own registry's storage): apt may change
    or purge it, and that package's registry may use it at the same time."""
    owned = package_managed_dir(settings)
    if owned is None:
        return []
    return [
        SecurityWarning(
            "settings.package_managed_dir",
            f"MY_REG_DIR={settings.dir} is in {owned}, which Debian's docker-registry package "
            "manages (its own registry's storage): `apt purge` may delete it, and that "
            "registry may write to it too. Use a directory of its own, such as "
            "/var/lib/my_registry",
            {"data_dir": str(settings.dir), "package_dir": str(owned)},
        )
    ]


def exposure(settings: Settings) -> list[SecurityWarning]:
    """Warnings for a registry published beyond this host without TLS or authentication."""
    address = ipaddress.ip_address(settings.bind)
    if address.is_loopback:
        return []
    where = (
        f"port {settings.port} of every interface"
        if address.is_unspecified
        else f"{settings.bind}:{settings.port}"
    )
    has_tls, has_auth = tls_enabled(settings), auth_enabled(settings)
    unless = " (unless MY_REG_CONF configures them)" if settings.conf is not None else ""
    fields = {"bind": settings.bind, "port": settings.port, "tls": has_tls, "auth": has_auth}
    if not has_tls and not has_auth:
        return [
            SecurityWarning(
                "security.exposed",
                f"MY_REG_BIND={settings.bind} publishes the registry on {where} with neither "
                f"TLS nor authentication{unless}: anyone who can reach it can push and pull "
                "images (host firewalls such as ufw do not filter Docker's published ports). "
                "Set MY_REG_TLS_DIR and MY_REG_AUTH_HTPASSWD, or MY_REG_BIND=127.0.0.1",
                fields,
            )
        ]
    if not has_tls:
        return [
            SecurityWarning(
                "security.cleartext_credentials",
                f"MY_REG_BIND={settings.bind} publishes the registry on {where} with "
                f"authentication but without TLS{unless}: passwords cross the network in "
                "clear text. Set MY_REG_TLS_DIR",
                fields,
            )
        ]
    if not has_auth:
        return [
            SecurityWarning(
                "security.no_authentication",
                f"MY_REG_BIND={settings.bind} publishes the registry on {where} without "
                f"authentication{unless}: anyone who can reach it can push and pull images. "
                "Set MY_REG_AUTH_HTPASSWD",
                fields,
            )
        ]
    return []


def describe(settings: Settings, certificate: tls.Certificate | None, now: datetime) -> list[str]:
    """`check`'s summary of TLS, authentication and hardening (reads the htpasswd file)."""
    lines = []
    if certificate is None:
        lines.append("tls: off (MY_REG_TLS_DIR unset)")
    else:
        names = ", ".join(certificate.names) or "none"
        lines.append(
            f"tls: certificate {certificate.path} ({certificate.subject}; names {names}), "
            f"valid until {certificate.not_after:%Y-%m-%d} "
            f"({certificate.days_left(now):.0f} days); key {settings.tls_private_key} matches; "
            "the probe pins this certificate"
        )
    if settings.auth_htpasswd is None:
        lines.append("auth: off (MY_REG_AUTH_HTPASSWD unset)")
    else:
        try:
            count = htpasswd_file.check_file(settings.auth_htpasswd)
            users = f"{count} user{'' if count == 1 else 's'}"
        except htpasswd_file.HtpasswdError as err:
            users = str(err)
        lines.append(f"auth: htpasswd {settings.auth_htpasswd} ({users}), mounted read-only")
    hardening = [
        "read-only root filesystem (tmpfs /tmp)"
        if settings.read_only
        else "writable root filesystem (MY_REG_READ_ONLY=false)",
        "no-new-privileges"
        if settings.no_new_privileges
        else "new privileges allowed (MY_REG_NO_NEW_PRIVILEGES=false)",
        "all capabilities dropped"
        if settings.cap_drop_all
        else "Docker's default capabilities (MY_REG_CAP_DROP_ALL=false)",
        f"memory limit {settings.memory}" if settings.memory else "no memory limit",
    ]
    lines.append(f"hardening: {', '.join(hardening)}")
    if settings.fleet:
        storage = storage_of(settings)
        shared = "shared by the fleet" if storage.shared else "NOT shared"
        lines.append(f"storage: {storage.describe()}, {shared}")
    return lines
