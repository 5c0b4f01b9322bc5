"""The end-to-end path, assembled: firmware rig(s) -> edge gateway -> Mosquitto ->
ingester -> InfluxDB, with every sample accounted for by sequence number.

Used by the demo and the integration tests. Broker, database and firmware are real
processes; the gateway and ingester run here as asyncio tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from fieldrig_cloud.influx import InfluxHttp
from fieldrig_cloud.ingester import Ingester
from fieldrig_cloud.schema import CELL_SAMPLE, DATABASE
from fieldrig_edge.config import BrokerConfig, GatewayConfig, RigConfig, SpoolConfig
from fieldrig_edge.gateway import Gateway
from fieldrig_hil.services import FirmwareRig, InfluxDB, Mosquitto


@dataclass(frozen=True, slots=True)
class Accounting:
    """Per rig: how many samples the firmware numbered vs how many InfluxDB holds."""

    rig: str
    expected: int
    stored: int
    distinct_seq: int
    min_seq: int
    max_seq: int

    @property
    def complete(self) -> bool:
        return (self.stored == self.expected == self.distinct_seq
                and (self.expected == 0 or (self.min_seq, self.max_seq) == (0, self.expected - 1)))


def account(influx: InfluxDB, site: str, rig: str, expected: int) -> Accounting:
    """Query InfluxDB: count, distinct seq and seq range of one rig's samples."""
    where = f"WHERE site = '{site}' AND rig = '{rig}'"
    q = (f'SELECT COUNT("seq"), MIN("seq"), MAX("seq") FROM "{CELL_SAMPLE}" {where}; '
         f'SELECT COUNT(DISTINCT("seq")) FROM "{CELL_SAMPLE}" {where}')
    import httpx

    r = httpx.post(f"{influx.url}/query", params={"db": DATABASE, "q": q}, timeout=30)
    r.raise_for_status()
    results = r.json()["results"]
    s0 = results[0].get("series")
    s1 = results[1].get("series")
    if not s0:
        return Accounting(rig, expected, 0, 0, -1, -1)
    _, count, mn, mx = s0[0]["values"][0]
    distinct = s1[0]["values"][0][1] if s1 else 0
    return Accounting(rig, expected, int(count), int(distinct), int(mn), int(mx))


async def run_thin_path(
    broker: Mosquitto,
    influx: InfluxDB,
    rigs: list[FirmwareRig],
    site: str = "lab-1",
    timeout_s: float = 120.0,
    progress: Callable[[str], None] | None = None,
) -> list[Accounting]:
    """Run rigs that each send a fixed number of samples; return the stored accounting."""
    say = progress or (lambda _m: None)
    db = InfluxHttp(influx.url, DATABASE)
    await db.create_database()
    stop_ingest = asyncio.Event()
    stop_gateway = asyncio.Event()
    ready = asyncio.Event()
    ingester = Ingester(broker.host, broker.port, db)
    ingest_task = asyncio.create_task(ingester.run(stop_ingest, ready))
    await asyncio.wait_for(ready.wait(), 10)
    say(f"ingester subscribed on mqtt://{broker.host}:{broker.port}")
    # The gateway's store-and-forward spool lives beside the broker's data.
    gateway = Gateway(GatewayConfig(
        site=site, gateway_id="gw-1", broker=BrokerConfig(broker.host, broker.port),
        rigs=[RigConfig(r.rig_id, f"tcp://{r.host}:{r.port}", cell=f"cell-{r.rig_id}",
                        run="run-1") for r in rigs],
        spool=SpoolConfig(broker.workdir.parent / "edge-spool.sqlite")))
    gw_task = asyncio.create_task(gateway.run(stop_gateway))
    say(f"gateway connected to {len(rigs)} rig(s)")
    total = sum(r.samples for r in rigs)
    deadline = time.monotonic() + timeout_s
    try:
        while ingester.stats.points < total and time.monotonic() < deadline:
            for t in (ingest_task, gw_task):
                if t.done():
                    t.result()  # surface a crash instead of waiting for the timeout
            await asyncio.sleep(0.2)
            say(f"published {gateway.published_samples}/{total}, "
                f"stored {ingester.stats.points}/{total}")
    finally:
        stop_gateway.set()
        await asyncio.gather(gw_task, return_exceptions=True)
        stop_ingest.set()
        await asyncio.gather(ingest_task, return_exceptions=True)
        await db.aclose()
    return [account(influx, site, r.rig_id, r.samples) for r in rigs]
