"""`run_headend(relays=...)` (`amistack headend --concentrator ID=HOST:PORT`): the meters
registered under a mesh concentrator are addressed at its C12.22 relay by the collector's
polls and by commands; the others keep no address until they push (docs/mesh.md)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from amistack.c1222.acse import ApTitle
from amistack.headend.collector import CollectorConfig, Mode
from amistack.headend.keys import DirectorySource
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt.keyring import KeyRingDirectory
from amistack.keymgmt.ukmf import PurposeRegistry
from amistack.runtime.headend import HeadEndRuntime, run_headend

RELAY = ("127.0.0.1", 7153)


async def _targets(tmp: Path) -> dict[str, object]:
    repo = SqliteRepository(tmp)
    for n, (meter, conc) in enumerate((("m-mesh", "conc-1"), ("m-elsewhere", "conc-2"))):
        repo.register_meter(meter, str(ApTitle((0, 100 + n), relative=True).absolute()), conc,
                            "cell", time.time())  # fmt: skip
        repo.commission_meter(meter, time.time())
    repo.close()
    stop = asyncio.Event()
    ready: asyncio.Future[HeadEndRuntime] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_headend(
            tmp,
            listen=[("127.0.0.1", 0)],
            api=None,
            key_source=DirectorySource(KeyRingDirectory(PurposeRegistry())),
            collector=CollectorConfig(mode=Mode.POLLED),
            relays={"conc-1": RELAY},
            stop=stop,
            ready=ready.set_result,
        )
    )
    rt = await asyncio.wait_for(ready, 10)
    collector = rt.engine.collector
    got = {m: getattr(collector.target(m), "addr", None) for m in ("m-mesh", "m-elsewhere")}
    stop.set()
    await asyncio.wait_for(task, 10)
    return got


def test_meters_under_a_concentrator_are_polled_at_its_relay(tmp_path: Path) -> None:
    assert asyncio.run(_targets(tmp_path)) == {"m-mesh": RELAY, "m-elsewhere": None}
