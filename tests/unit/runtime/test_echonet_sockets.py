"""ECHONET Lite sockets (runtime/echonet.py): the unicast port is exclusive, the group is shared.

Issue 10: with SO_REUSEADDR on every socket a second meter or a HEMS on the same host bound UDP
3610 beside the first without an error, and the kernel then handed the unicast answers to only
one of them. Loopback addresses in 127.0.52.0/24 (this file's range), on a free port."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from amistack.echonet.node import MULTICAST_V4
from amistack.runtime.echonet import AddressInUse, multicast_socket, unicast_socket


@pytest.fixture
def port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("0.0.0.0", 0))  # free on every address, the wildcard tests included
        return int(probe.getsockname()[1])


@pytest.fixture
def opened() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def test_a_second_node_on_the_same_address_is_refused_naming_it(
    port: int, opened: list[socket.socket]
) -> None:
    opened.append(unicast_socket("127.0.52.1", port))
    with pytest.raises(AddressInUse) as caught:
        opened.append(unicast_socket("127.0.52.1", port))
    assert caught.value.host == "127.0.52.1" and caught.value.port == port
    assert str(caught.value).startswith(f"UDP 127.0.52.1:{port} is already in use")


def test_the_group_socket_shares_the_port_with_its_own_wildcard_socket(
    port: int, opened: list[socket.socket]
) -> None:
    """Multicast membership still works: the node's group socket binds beside its own wildcard
    unicast socket, and a second node's group socket too (every local node hears the group),
    while the unicast address stays exclusive."""
    opened.append(unicast_socket("0.0.0.0", port))
    opened.append(multicast_socket(MULTICAST_V4[0], port))
    opened.append(multicast_socket(MULTICAST_V4[0], port))  # another node on the host
    with pytest.raises(AddressInUse):
        unicast_socket("0.0.0.0", port)


def test_nodes_on_distinct_addresses_share_the_host(port: int, opened: list[socket.socket]) -> None:
    """The documented way to run a meter and a HEMS on one host: one address each."""
    opened.append(unicast_socket("127.0.52.1", port))
    opened.append(unicast_socket("127.0.52.2", port))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    opened.append(tx)
    tx.sendto(b"to-2", ("127.0.52.2", port))
    opened[1].settimeout(2.0)
    assert opened[1].recv(16) == b"to-2"
