"""The Grafana dashboard shipped in packaging/ asks only for metrics the supervisor exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from supervisor.adapters.metrics import Metrics

DASHBOARD = Path(__file__).parents[2] / "packaging" / "grafana" / "registry-supervisor.json"
# Prometheus' exposition adds these to a counter's or a histogram's family name.
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def exported_names() -> set[str]:
    """Every sample name a supervisor with metrics on can export."""
    metrics = Metrics(enabled=True)
    assert metrics.registry is not None
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES)
    return names


def test_every_panel_queries_an_exported_metric() -> None:
    """A renamed metric fails here, not on an admin's empty panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bregistry_[a-z_]+", target["expr"])
    }
    assert asked, "no panel queries a registry_* metric"
    assert set() == asked - exported_names()
