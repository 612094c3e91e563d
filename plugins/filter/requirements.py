# -*- coding: utf-8 -*-
# Copyright: sdapi.node contributors
# Apache License 2.0 (see LICENSE)
"""Pip requirement edits for a webui fork's requirements file, on the standard library alone.

pip gives an operator no way past a pin of a requirements file: a constraint never
overrides an ``==`` line (both must hold, so a conflicting pair is ResolutionImpossible).
A fork's pin that conflicts with the chosen torch (A1111 v1.10.1 and Forge pin
``setuptools==69.5.1``; torch 2.13 and newer need 77.0.3 or newer) must be replaced or
dropped in the file itself, which is what ``requirements_override`` does.

Each filter's documentation is the YAML file of its name beside this one.
"""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

# PEP 508: a name starts and ends with a letter or digit; '.', '-' and '_' may join them.
_NAME = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_VERSION = re.compile(r"^[0-9]")


def _canonical(name):
    """PEP 503 normalisation: pip treats Open_Clip-Torch and open-clip-torch as one."""
    return re.sub(r"[-_.]+", "-", str(name)).lower()


def _spec(name, value):
    """The requirement for name from an override value: a bare version means ``==``."""
    value = str(value).strip()
    found = _NAME.match(str(name))
    if not found or found.group(1) != str(name):
        raise AnsibleFilterError(f"not a package name: {name!r}")
    if _VERSION.match(value):
        return f"{name}=={value}"
    return f"{name}{value}"


def pip_pins(mapping):
    """Turn {name: version or specifier} into requirement lines, in the mapping's order."""
    return [_spec(name, value) for name, value in (mapping or {}).items()]


def requirements_override(text, overrides):
    """Replace or drop the requirement lines of the named packages; add the ones not there.

    A value of None or '' drops the package's line; any other value replaces it (a bare
    version means ``==``). Comments, blank lines and option lines (``-r``, ``--index-url``)
    are kept as they are. Environment markers and extras of a replaced line are dropped
    with it: the override is the whole requirement.
    """
    wanted = {_canonical(name): (name, value) for name, value in (overrides or {}).items()}
    seen = set()
    out = []
    for line in str(text).splitlines():
        body = line.split("#", 1)[0].strip()
        match = _NAME.match(body) if body and not body.startswith("-") else None
        key = _canonical(match.group(1)) if match else None
        if key not in wanted:
            out.append(line)
            continue
        seen.add(key)
        name, value = wanted[key]
        if value is None or str(value).strip() == "":
            out.append(f"# dropped by sdapi.node: {line.strip()}")
        else:
            out.append(f"{_spec(name, value)}  # sdapi.node override of: {body}")
    for key, (name, value) in wanted.items():
        if key not in seen and value is not None and str(value).strip() != "":
            out.append(f"{_spec(name, value)}  # added by sdapi.node")
    return "\n".join(out) + "\n"


class FilterModule:
    """Pip requirement filters of sdapi.node."""

    def filters(self):
        return {
            "pip_pins": pip_pins,
            "requirements_override": requirements_override,
        }
