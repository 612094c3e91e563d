"""Test inputs of the nginx_proxy scenario, read from its molecule.yml (one source)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def scenario_vars() -> dict:
    """The group_vars of sdapi_nodes as molecule.yml declares them."""
    path = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", Path(__file__).parent.parent))
    config = yaml.safe_load((path / "molecule.yml").read_text())
    return config["provisioner"]["inventory"]["group_vars"]["sdapi_nodes"]


def clients() -> dict:
    """Client name -> its entry (key, basic_password, limits)."""
    return {c["name"]: c for c in scenario_vars()["nginx_proxy_clients"]}


def secrets() -> list[str]:
    """Every credential value of the scenario, and the Basic header forms of them."""
    import base64

    values = []
    for c in scenario_vars()["nginx_proxy_clients"]:
        if c.get("key"):
            values.append(c["key"])
        if c.get("basic_password"):
            values.append(c["basic_password"])
            pair = f"{c.get('basic_user', c['name'])}:{c['basic_password']}"
            values.append(base64.b64encode(pair.encode()).decode())
    backend = scenario_vars()["nginx_proxy_backend_basic_auth"]
    values += [backend.split(":", 1)[1], base64.b64encode(backend.encode()).decode()]
    return values
