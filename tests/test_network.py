"""Which network the servers use when the job spans nodes: pure, no MPI."""
from __future__ import annotations

import pytest

from start_daskmpi.errors import LaunchError
from start_daskmpi.plan.network import Address, interfaces_for, shared_network

LO = Address("lo", "127.0.0.1", 8)


def node(*addresses: str) -> tuple[Address, ...]:
    """'eth0 10.1.0.5/24' -> an Address; loopback always there."""
    found = [LO]
    for text in addresses:
        name, cidr = text.split()
        address, prefix = cidr.split("/")
        found.append(Address(name, address, int(prefix)))
    return tuple(found)


def test_one_node_keeps_what_was_asked_else_its_loopback():
    assert interfaces_for(None, ["a"], [node("eth0 10.1.0.5/24")]) == (["lo"], None)
    assert interfaces_for("eth0", ["a"], [node("eth0 10.1.0.5/24")]) == (["eth0"], None)


def test_the_network_every_node_shares_never_loopback():
    nodes = [node("eth0 10.1.0.5/24"), node("eth0 10.1.0.6/24")]
    names, note = interfaces_for(None, ["a", "b"], nodes)
    assert names == ["eth0", "eth0"]
    assert note.startswith("Network: 10.1.0.0/24 (eth0), which every node shares")


def test_the_fast_fabric_before_ethernet():
    nodes = [node("eth0 10.1.0.5/24", "hsn0 10.9.0.5/16"),
             node("eth0 10.1.0.6/24", "hsn0 10.9.3.7/16")]
    assert str(shared_network(nodes)) == "10.9.0.0/16"
    assert interfaces_for(None, ["a", "b"], nodes)[0] == ["hsn0", "hsn0"]


def test_a_network_only_some_nodes_have_is_passed_over():
    nodes = [node("ib0 10.9.0.5/16", "eth0 10.1.0.5/24"), node("eth0 10.1.0.6/24"),
             node("ib0 10.9.0.7/16", "eth1 10.1.0.7/24")]
    names, _ = interfaces_for(None, ["a", "b", "c"], nodes)
    assert names == ["eth0", "eth0", "eth1"]  # each node's own name for the shared network


def test_nodes_that_share_no_network_are_one_line():
    nodes = [node("eth0 10.1.0.5/24"), node("eth0 10.2.0.6/24")]
    with pytest.raises(LaunchError, match=r"share no network \(a has eth0 10.1.0.5/24; "
                                          r"b has eth0 10.2.0.6/24\): give --interface"):
        interfaces_for(None, ["a", "b"], nodes)


def test_loopback_on_several_nodes_is_an_error():
    with pytest.raises(LaunchError, match="--interface lo is loopback, which the job's other 1"):
        interfaces_for("lo", ["a", "b"], [node("eth0 10.1.0.5/24"), node("eth0 10.1.0.6/24")])


def test_a_named_interface_goes_to_every_node():
    nodes = [node("ib0 10.9.0.5/16"), node("ib0 10.9.0.6/16")]
    assert interfaces_for("ib0", ["a", "b"], nodes) == (["ib0", "ib0"], None)


def test_what_is_said_whole():
    nodes = [node("eth0 10.1.0.5/24"), node("eth1 10.1.0.6/24")]
    assert interfaces_for(None, ["a", "b"], nodes)[1] == (
        "Network: 10.1.0.0/24 (eth0, eth1), which every node shares (--interface chooses another)"
    )
    with pytest.raises(LaunchError) as lone:
        interfaces_for(None, ["a", "b"], [node("eth0 10.1.0.5/24", "eth1 10.3.0.5/16"), node()])
    assert str(lone.value) == ("the job's nodes share no network (a has eth0 10.1.0.5/24, "
                               "eth1 10.3.0.5/16; b has none): give --interface NAME")
    with pytest.raises(LaunchError) as loopback:
        interfaces_for("lo", ["a", "b", "c"], [node(), node(), node()])
    assert str(loopback.value) == (
        "--interface lo is loopback, which the job's other 2 node(s) cannot reach: name a "
        "network every node shares, or leave --interface out to have one chosen")


def test_the_first_nodes_interface_decides_and_every_node_is_named():
    """The interface asked for is judged where the scheduler runs (the first
    node); hosts and nodes go together, one each."""
    odd = [(Address("eth9", "127.0.0.2", 8),), (Address("eth9", "10.1.0.6", 24),)]
    with pytest.raises(LaunchError, match="--interface eth9 is loopback"):
        interfaces_for("eth9", ["a", "b"], odd)
    assert interfaces_for("eth9", ["a", "b"], odd[::-1]) == (["eth9", "eth9"], None)
    with pytest.raises(ValueError):
        interfaces_for(None, ["a"], [node("eth0 10.1.0.5/24"), node("eth0 10.2.0.6/24")])


def test_a_node_without_loopback_has_no_interface_to_keep_to():
    assert interfaces_for(None, ["a"], [(Address("eth0", "10.1.0.5", 24),)]) == ([None], None)


def test_this_nodes_addresses_are_psutils_ipv4_ones():
    from start_daskmpi.plan.network import interface_address, listen_host, node_addresses

    assert Address("lo", "127.0.0.1", 8) in node_addresses()
    assert all(":" not in a.address for a in node_addresses())
    assert interface_address("lo") == "127.0.0.1" == listen_host("lo") == listen_host(None)


def test_an_interface_missing_or_without_ipv4_is_one_line(monkeypatch):
    import socket
    from types import SimpleNamespace

    import psutil

    from start_daskmpi.plan import network

    v6 = SimpleNamespace(family=socket.AF_INET6, address="fe80::1", netmask="ffff::")
    v4 = SimpleNamespace(family=socket.AF_INET, address="10.1.2.3", netmask="255.255.0.0")
    monkeypatch.setattr(psutil, "net_if_addrs", lambda: {"lo": [v6], "ib0": [v6], "hsn0": [v6, v4]})
    assert network.listen_host("hsn0") == "10.1.2.3"
    with pytest.raises(LaunchError) as no_ipv4:
        network.interface_address("ib0")
    assert str(no_ipv4.value) == "network interface 'ib0' has no IPv4 address: choose another"
    with pytest.raises(LaunchError) as missing:
        network.check_interface("eth7")
    assert str(missing.value) == (
        f"no network interface 'eth7' on {socket.gethostname()} (it has: hsn0, ib0, lo)")
    with pytest.raises(LaunchError, match="no network interface 'eth7'"):
        network.interface_address("eth7")
    network.check_interface(None)  # none asked: nothing to check
