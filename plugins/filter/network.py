# -*- coding: utf-8 -*-
# Copyright: sdapi.node contributors
# Apache License 2.0 (see LICENSE)
"""Address checks for firewall inputs, on the standard library alone.

ansible.utils.ipaddr needs netaddr on the controller; these filters need nothing, so
argument checks run on any controller before the host is touched.

Each filter's documentation is the YAML file of its name beside this one: ansible-doc looks
a filter's documentation up by the filter's name, and this file holds three filters.
"""

from __future__ import annotations

import ipaddress


def _network(value):
    return ipaddress.ip_network(str(value).strip(), strict=False)


def invalid_networks(values):
    """Return the entries that are neither an IP address nor a CIDR network."""
    bad = []
    for value in values or []:
        try:
            _network(value)
        except ValueError:
            bad.append(value)
    return bad


def networks_of_family(values, family):
    """Keep the entries of one IP version (4 or 6), normalised to network notation."""
    wanted = int(family)
    return [str(_network(v)) for v in values or [] if _network(v).version == wanted]


def address_in_networks(address, networks):
    """True when the address lies in any of the networks (an empty list allows all)."""
    if not networks:
        return True
    ip = ipaddress.ip_address(str(address).strip())
    return any(ip in _network(n) for n in networks if _network(n).version == ip.version)


class FilterModule:
    """Network filters of sdapi.node."""

    def filters(self):
        return {
            "invalid_networks": invalid_networks,
            "networks_of_family": networks_of_family,
            "address_in_networks": address_in_networks,
        }
