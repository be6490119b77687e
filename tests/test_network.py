"""Which network the servers use when the job spans nodes: pure, no MPI."""
from __future__ import annotations

import pytest

from start_daskmpi.errors import LaunchError
from start_daskmpi.network import Address, interfaces_for, shared_network

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
