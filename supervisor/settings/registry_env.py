"""REGISTRY_* variables looked up by name as the supervisor's checks read them (pure).

The registry's env parser (distribution's configuration/parser.go) compares each part of a
name but the last with struct fields and map keys in upper case, and lower-cases the last
part when it sets a map key: ``REGISTRY_STORAGE_FILESYSTEM_rootdirectory`` sets the root
directory, while ``REGISTRY_Storage`` is ignored. The checks here look names up
case-insensitively, so that a refusal is never dodged by a name's case.
"""

from __future__ import annotations


class RegistryEnv:
    """REGISTRY_* variables looked up as the registry reads them: names case-insensitively
    (its parser upper-cases struct fields and lower-cases map keys)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.by_upper = {key.upper(): key for key in sorted(env)}

    def get(self, name: str) -> tuple[str, str] | None:
        """(the name as given, its value) for the upper-case ``name``; None if unset."""
        key = self.by_upper.get(name)
        return None if key is None else (key, self.env[key])

    def starting(self, prefix: str) -> list[tuple[str, str]]:
        """Every (name, value) whose upper-case name starts with ``prefix``, sorted."""
        return [
            (key, self.env[key])
            for upper, key in sorted(self.by_upper.items())
            if upper.startswith(prefix)
        ]
