"""Retention policies and downsampling (continuous queries) of the ``fieldrig`` database.

Contract: docs/influxdb.md. Four retention policies:

- ``raw`` (default): full-rate samples and state (10 Hz per rig), kept ``raw_duration``.
- ``agg_10s`` / ``agg_1m``: continuous-query aggregates of the full-rate measurements
  (mean, min, max, sample count, seq range per tag set), so months and years of data
  stay queryable at dashboard speed after the raw data expires.
- ``keep`` (infinite): the low-rate scientific record — events, EIS spectra and fits,
  CCD results, run summaries, dead letters — which must never expire.

The ingester routes each point to its policy (``rp_of``); CQs recompute the last
``resample_for`` every interval, which absorbs the edge's usual delivery delay.
Data arriving later (store-and-forward after a long outage) is downsampled by
``backfill_statements`` (``fieldrig db backfill``), built from the same definitions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fieldrig_cloud import schema
from fieldrig_cloud.influx import InfluxError, InfluxHttp

RAW = "raw"
AGG_10S = "agg_10s"
AGG_1M = "agg_1m"
KEEP = "keep"

# Full-rate measurements live in raw; everything else is the long-lived record.
RAW_MEASUREMENTS = frozenset({
    schema.CELL_SAMPLE, schema.ACTUATOR_STATE, schema.IMPEDANCE, schema.RIG_STATUS,
    schema.GATEWAY_HEALTH, schema.PIPELINE_HEALTH,
})


def rp_of(measurement: str) -> str:
    return RAW if measurement in RAW_MEASUREMENTS else KEEP


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    raw_duration: str = "90d"
    agg_10s_duration: str = "400d"
    agg_1m_duration: str = "INF"
    keep_duration: str = "INF"
    resample_for_10s: str = "5m"
    resample_for_1m: str = "15m"

    def policies(self) -> list[tuple[str, str, str, bool]]:
        """(name, duration, shard duration, default)."""
        return [
            (RAW, self.raw_duration, "1d", True),
            (AGG_10S, self.agg_10s_duration, "7d", False),
            (AGG_1M, self.agg_1m_duration, "30d", False),
            (KEEP, self.keep_duration, "30d", False),
        ]


def _agg(field: str, fns: Iterable[str]) -> list[str]:
    out = []
    for fn in fns:
        alias = field if fn == "mean" else f"{field}_{fn}"
        out.append(f'{fn}("{field}") AS "{alias}"')
    return out


# measurement -> SELECT expressions of its aggregate. Means keep the raw field names,
# so one panel query serves every policy (FROM "$rp"."cell_sample").
DOWNSAMPLE: dict[str, list[str]] = {
    schema.CELL_SAMPLE: [
        *_agg("cell_voltage_v", ("mean", "min", "max")),
        *_agg("cell_current_ma", ("mean", "min", "max")),
        *_agg("cell_temp_c", ("mean", "max")),
        *_agg("stack_pressure_mpa", ("mean", "max")),
        'last("rig_state") AS "rig_state"',
        'last("step") AS "step"',
        'last("cycle") AS "cycle"',
        'count("seq") AS "samples"',
        'min("seq") AS "seq_min"',
        'max("seq") AS "seq"',
    ],
    schema.ACTUATOR_STATE: [
        *_agg("current_setpoint_ma", ("mean",)),
        *_agg("temp_setpoint_c", ("mean",)),
        *_agg("pressure_setpoint_mpa", ("mean",)),
        *_agg("heater_duty", ("mean", "max")),
    ],
    schema.IMPEDANCE: [
        *_agg("z_mag_ohm", ("mean", "min")),
        *_agg("z_phase_deg", ("mean",)),
        *_agg("z_freq_hz", ("mean",)),
    ],
}

INTERVALS = ((AGG_10S, "10s"), (AGG_1M, "1m"))


def _select_into(db: str, measurement: str, target_rp: str, interval: str,
                 where: str = "") -> str:
    exprs = ", ".join(DOWNSAMPLE[measurement])
    w = f" WHERE {where}" if where else ""
    return (f'SELECT {exprs} INTO "{db}"."{target_rp}"."{measurement}" '
            f'FROM "{db}"."{RAW}"."{measurement}"{w} GROUP BY time({interval}), *')


def cq_name(measurement: str, interval: str) -> str:
    return f"cq_{measurement}_{interval}"


def cq_statements(db: str = schema.DATABASE,
                  cfg: RetentionConfig = RetentionConfig()) -> dict[str, str]:
    out = {}
    for rp, interval in INTERVALS:
        resample_for = cfg.resample_for_10s if interval == "10s" else cfg.resample_for_1m
        for m in DOWNSAMPLE:
            name = cq_name(m, interval)
            out[name] = (f'CREATE CONTINUOUS QUERY "{name}" ON "{db}" '
                         f"RESAMPLE EVERY {interval} FOR {resample_for} BEGIN "
                         f"{_select_into(db, m, rp, interval)} END")
    return out


def backfill_statements(start_ns: int, end_ns: int, db: str = schema.DATABASE) -> list[str]:
    """The CQs' SELECT ... INTO over an explicit range (late data, new CQs)."""
    where = f"time >= {start_ns} AND time < {end_ns}"
    return [_select_into(db, m, rp, interval, where)
            for rp, interval in INTERVALS for m in DOWNSAMPLE]


async def ensure(influx: InfluxHttp, cfg: RetentionConfig = RetentionConfig()) -> None:
    """Create or update database, policies and CQs; safe to run on every start."""
    db = influx.database
    await influx.create_database()
    for name, duration, shard, default in cfg.policies():
        spec = f"DURATION {duration} REPLICATION 1 SHARD DURATION {shard}"
        spec += " DEFAULT" if default else ""
        try:
            await influx.query(f'CREATE RETENTION POLICY "{name}" ON "{db}" {spec}', "POST")
        except InfluxError as exc:
            if "already exists" not in str(exc):
                raise
            await influx.query(f'ALTER RETENTION POLICY "{name}" ON "{db}" {spec}', "POST")
    for name, stmt in cq_statements(db, cfg).items():
        try:
            await influx.query(stmt, "POST")
        except InfluxError as exc:
            if "already exists" not in str(exc):
                raise
            # Same name, other definition: replace it.
            await influx.query(f'DROP CONTINUOUS QUERY "{name}" ON "{db}"', "POST")
            await influx.query(stmt, "POST")


async def backfill(influx: InfluxHttp, start_ns: int, end_ns: int) -> None:
    for stmt in backfill_statements(start_ns, end_ns, influx.database):
        await influx.query(stmt, "POST")
