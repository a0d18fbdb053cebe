"""The one Settings model: loaded once from the environment and an env file, validated at
load, every problem one line naming the variable, the value given and what is expected.

The package, by concern (dependencies point down this list; each module imports only the
ones below it):

- load.py: ``load_settings`` (sources -> model -> cross-checks) and ``effective``;
- conflicts.py: settings that contradict each other (REGISTRY_* against MY_REG_*);
- storage.py: which storage driver the registry uses, whether fleet members share it,
  its keyed fingerprint (reads MY_REG_CONF's storage section, nothing else);
- registry_env.py: REGISTRY_* names looked up case-insensitively;
- model.py: the ``Settings`` model, one validator per value;
- sources.py: the environment and the env file (read as compose reads it), ``raw_setting``;
- paths.py: what the file system says about the paths given (reads the disk, no more);
- image_ref.py, values.py: the grammar of single values (pure).

``from supervisor.settings import X`` is the interface; the modules are its layout.
"""

from supervisor.settings.conflicts import (
    CONTAINER_DATA,
    CONTAINER_PORT,
    DRAIN_VARIABLE,
    GUARDED_SECTIONS,
)
from supervisor.settings.image_ref import REPOSITORY_MAX, TAG_EXPECTED
from supervisor.settings.load import effective, load_settings
from supervisor.settings.model import Settings
from supervisor.settings.paths import DOCKER_ROOT, PACKAGE_MANAGED_DIRS, package_managed_dir
from supervisor.settings.sources import (
    DEFAULT_ENV_FILE,
    ENV_PREFIX,
    INTERNAL,
    PASSTHROUGH_PREFIX,
    TRACING_PREFIX,
    raw_setting,
)
from supervisor.settings.storage import (
    FILESYSTEM,
    SHARED_DRIVERS,
    Origin,
    Storage,
    storage_fingerprint,
    storage_of,
)
from supervisor.settings.values import (
    MAX_SECONDS,
    MEMORY_MAX,
    MEMORY_MIN,
    METRICS_DEFAULT_HOST,
    LogFormat,
    LogLevel,
    PullPolicy,
    Seconds,
    parse_metrics_address,
)

__all__ = [
    "CONTAINER_DATA",
    "CONTAINER_PORT",
    "DEFAULT_ENV_FILE",
    "DOCKER_ROOT",
    "DRAIN_VARIABLE",
    "ENV_PREFIX",
    "FILESYSTEM",
    "GUARDED_SECTIONS",
    "INTERNAL",
    "MAX_SECONDS",
    "MEMORY_MAX",
    "MEMORY_MIN",
    "METRICS_DEFAULT_HOST",
    "PACKAGE_MANAGED_DIRS",
    "PASSTHROUGH_PREFIX",
    "REPOSITORY_MAX",
    "SHARED_DRIVERS",
    "TAG_EXPECTED",
    "TRACING_PREFIX",
    "LogFormat",
    "LogLevel",
    "Origin",
    "PullPolicy",
    "Seconds",
    "Settings",
    "Storage",
    "effective",
    "load_settings",
    "package_managed_dir",
    "parse_metrics_address",
    "raw_setting",
    "storage_fingerprint",
    "storage_of",
]
