"""The address filters that guard the firewall inputs of sdapi.node.base."""

import pytest

from ansible_collections.sdapi.node.plugins.filter import network


@pytest.mark.parametrize(
    "values,bad",
    [
        (["10.0.0.1", "10.0.0.0/8", "fd00::1", "fd00::/64"], []),
        (["10.0.0.300", "proxy.example", "10.0.0.0/33", ""], ["10.0.0.300", "proxy.example", "10.0.0.0/33", ""]),
        (["192.168.1.7/24"], []),  # host bits set: accepted as the /24 it names
        (None, []),
    ],
)
def test_invalid_networks_lists_only_the_bad_entries(values, bad):
    assert network.invalid_networks(values) == bad


def test_networks_of_family_splits_and_normalises():
    values = ["10.1.2.3", "fd00::1", "192.168.1.7/24", "2001:db8::/32"]
    assert network.networks_of_family(values, 4) == ["10.1.2.3/32", "192.168.1.0/24"]
    assert network.networks_of_family(values, "6") == ["fd00::1/128", "2001:db8::/32"]


@pytest.mark.parametrize(
    "address,networks,inside",
    [
        ("10.0.0.5", [], True),  # no restriction
        ("10.0.0.5", ["10.0.0.0/24"], True),
        ("10.0.1.5", ["10.0.0.0/24"], False),
        ("10.0.1.5", ["fd00::/8"], False),  # other family never matches
        ("fd00::5", ["10.0.0.0/8", "fd00::/8"], True),
    ],
)
def test_address_in_networks(address, networks, inside):
    assert network.address_in_networks(address, networks) is inside


def test_filters_are_registered_under_their_names():
    names = set(network.FilterModule().filters())
    assert names == {"invalid_networks", "networks_of_family", "address_in_networks"}
