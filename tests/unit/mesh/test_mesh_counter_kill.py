"""A sender killed with SIGKILL in the middle of sending: after the restart every frame counter
it uses is above every counter used before the kill (no nonce is ever reused)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from amistack.addr import Eui64, PanId
from amistack.mesh.frame import Frame, FrameType
from amistack.mesh.security import FileCounterStore, LinkSecurity, LinkSecurityConfig

METER = Eui64.parse("02:00:00:00:00:00:00:01")
RESERVE = 16

SENDER = """
import sys
from pathlib import Path
from amistack.addr import Eui64, PanId
from amistack.mesh.frame import Frame, FrameType
from amistack.mesh.security import FileCounterStore, LinkSecurity, LinkSecurityConfig
me = Eui64.parse("02:00:00:00:00:00:00:01")
config = LinkSecurityConfig(reserve=int(sys.argv[2]))
sec = LinkSecurity(me, FileCounterStore(Path(sys.argv[1])), config)
sec.install_key(1, bytes(16))
frame = Frame(FrameType.DATA, 0, PanId(1), Eui64(bytes(8)), None, me, b"x", None, True)
while True:
    sent = sec.protect(frame, 1)
    sys.stdout.write(f"{sent.security.counter}\\n")
    sys.stdout.flush()
"""


def _used_before_kill(store: Path, count: int) -> list[int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SENDER, str(store), str(RESERVE)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    used = [int(proc.stdout.readline()) for _ in range(count)]
    os.kill(proc.pid, signal.SIGKILL)  # mid-send: it never stops writing frames
    used += [int(line) for line in proc.stdout.read().split()]  # what it wrote until it died
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return used


def test_restart_after_sigkill_never_reuses_a_counter(tmp_path: Path) -> None:
    store = tmp_path / "counters.json"
    before = _used_before_kill(store, 37)
    assert before == list(range(len(before)))  # monotonic, gap-free while it ran
    again = _used_before_kill(store, 5)  # the second life is killed too
    assert min(again) > max(before)
    sec = LinkSecurity(METER, FileCounterStore(store), LinkSecurityConfig(reserve=RESERVE))
    sec.install_key(1, bytes(16))
    frame = Frame(FrameType.DATA, 0, PanId(1), Eui64(bytes(8)), None, METER, b"x", None, True)
    third = [sec.protect(frame, 1).security.counter for _ in range(3)]  # type: ignore[union-attr]
    assert min(third) > max(again)
    # at most one reserve is skipped per restart: the counter space is not squandered
    assert min(third) - max(again) <= RESERVE + 1
