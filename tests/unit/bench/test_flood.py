"""`amistack bench flood`: what the flooder sends, and its options (the run itself is a bench,
not a test)."""

from __future__ import annotations

import pytest
from tests.cli import run_cli as run

from amistack.bench.flood import flood_datagrams
from amistack.pana.constants import MessageType
from amistack.pana.message import PanaMessage
from amistack.pana.relay import unwrap_relay


def test_the_floods_are_what_they_say() -> None:
    (pci,) = flood_datagrams("pci")
    assert len(pci) == 16 and PanaMessage.decode(pci).msg_type == MessageType.PCI
    prys = flood_datagrams("pry")
    inner = [unwrap_relay(PanaMessage.decode(d)) for d in prys[:1000]]
    assert all(PanaMessage.decode(m).msg_type == MessageType.PCI for _, m in inner)
    assert len({pac for pac, _ in inner}) == 1000  # every PCI from another PaC address


@pytest.mark.parametrize("argv", [["--duration", "0"], ["--rate", "-1"], ["--flood", "udp"]])
def test_bad_options_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, "bench", "flood", *argv)
    assert code == 2 and out == "" and err.strip()
