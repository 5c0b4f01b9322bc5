"""Every dashboard panel's query, run against an InfluxDB filled by a bench run, returns
data (the cloud issue's acceptance criterion), with no point written by the test.

The bench run is the demo's machinery (``demo_lab.Lab``, as ``make demo`` drives it): two
bench rigs -- the real firmware under micropython in lockstep with simulated cells --
run the demo's ``ccd_ladder`` (an EIS sweep of the pristine cell, then the ladder) and
``dendrite`` (fast plating, caught and mitigated) programs through the real gateway, a
private Mosquitto and the real ingester into a private InfluxDB. The operator's post-run
commands then add the analytics (``fieldrig analyze``: EIS fit, CCD, run summary) and the
aggregates (``fieldrig db backfill``). Every query of every dashboard runs as Grafana
interpolates it, with the run's site, rig and run, at each ``$rp`` resolution; so do the
template variables, the annotation query and the alert rules' queries.

Panels that no bench run can fill today are strict expected failures naming the reason
(``NO_BENCH_DATA``): when the gap is closed they pass, and the entry must go. The
dead-letter panels have their own test: a healthy bench run dead-letters nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fieldrig_cloud import dashboards
from fieldrig_cloud.cli import main as fieldrig
from fieldrig_hil.demo import account
from fieldrig_hil.demo_lab import SITE, Lab, LabConfig
from fieldrig_hil.demo_programs import AREA_CM2, PROGRAMS
from fieldrig_hil.services import InfluxDB, Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RUN = "bench-dashboards"
# Virtual seconds per rig: the dendrite rig's firmware raises its soft-short alarm at
# about 215 s, the ladder's cell bridges at about 240 s (3 mA/cm²); the rest is margin
# for a recipe that starts late on a busy machine.
DURATION_S = 360.0
# The rig the rig-level dashboards look at: the one whose recipe sweeps EIS.
RIG = "ccd-ladder"

_SETPOINTS = ("the firmware's SAMPLE (docs/link.md, <IIffffB) carries no set-points or "
              "heater duty and the gateway publishes none, so no actuator_state point is "
              "ever written from a rig")
_ALARMS = ("the firmware's alarms are EVENTs named echem_alarm / limit_tripped (kind in the "
           "body); the gateway adds no severity and the ingester's ALARM_EVENTS "
           "(fieldrig_cloud/schema.py) does not know those names, so they are stored with "
           "severity=info and the severity='alarm' filter finds none")
NO_BENCH_DATA = {
    "current_setpoint": _SETPOINTS,
    "temp_setpoint": _SETPOINTS,
    "pressure_setpoint": _SETPOINTS,
    "alarm_count": _ALARMS,
}
DEAD_LETTER_QUERIES = ("dead_letter_count", "dead_letters")

ALL_QUERIES = sorted({q for names in dashboards.all_panel_queries().values() for q in names})


def _no_bench_data(query: str) -> list[pytest.MarkDecorator]:
    if query not in NO_BENCH_DATA:
        return []
    return [pytest.mark.xfail(strict=True, raises=AssertionError, reason=NO_BENCH_DATA[query])]


def _case(name: str, rp: str) -> Any:
    return pytest.param(name, rp, marks=_no_bench_data(name), id=f"{name}-{rp}")


# As in cloud/tests/test_dashboards.py: "$rp" queries run at every resolution.
CASES = [_case(n, rp) for n in ALL_QUERIES if n not in DEAD_LETTER_QUERIES
         for rp in dashboards.RP_VALUES if rp == "raw" or '"$rp"' in dashboards.QUERIES[n].text]


@dataclass(frozen=True)
class BenchRun:
    db: InfluxDB
    start_ns: int
    end_ns: int
    ran_ns: int  # wall clock once the run was stored: where the alert rules evaluate
    rigs: tuple[str, ...]


def _series(db: InfluxDB, q: str) -> list[dict[str, Any]]:
    r = httpx.post(f"{db.url}/query", params={"db": "fieldrig", "q": q}, timeout=30)
    r.raise_for_status()
    result = r.json()["results"][0]
    assert "error" not in result, (q, result)
    series: list[dict[str, Any]] = result.get("series", [])
    return series


def _values(series: list[dict[str, Any]]) -> list[Any]:
    return [v for s in series for row in s["values"] for v in row[1:] if v is not None]


def _last_per_series(series: list[dict[str, Any]]) -> list[Any]:
    """Grafana's "last" reducer: each series' last non-null value."""
    out = []
    for s in series:
        values = [row[1] for row in s["values"] if row[1] is not None]
        if values:
            out.append(values[-1])
    return out


def _variables(rp: str = "raw") -> dict[str, str]:
    return {"site": SITE, "rig": RIG, "run": RUN, "rp": rp}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchRun]:
    work = tmp_path_factory.mktemp("bench-dashboards")
    # As demo.main: fieldrig_edge.session's INFO records carry extra={"args": ...}, which
    # logging refuses, failing the command; keep that logger above INFO.
    rig_log = logging.getLogger("fieldrig.edge.rig")
    level = rig_log.level
    rig_log.setLevel(logging.WARNING)
    start_ns = time.time_ns() - 60 * 10**9
    with contextlib.ExitStack() as stack:
        stack.callback(rig_log.setLevel, level)
        broker = Mosquitto(work / "mosquitto").start()
        stack.callback(broker.stop)
        db = InfluxDB(work / "influxdb").start()
        stack.callback(db.stop)
        # Health every second: the pipeline dashboard needs points from a short run.
        cfg = LabConfig(duration_s=DURATION_S, run=RUN, health_interval_s=1.0)
        lab = Lab(work, [PROGRAMS["ccd_ladder"], PROGRAMS["dendrite"]], cfg, broker, db,
                  say=lambda _line: None)
        stack.callback(lab.stop_rigs)
        lab.start_rigs()
        asyncio.run(lab.run())
        for r in lab.rigs:
            assert r.error is None and not r.phase.startswith("failed"), (
                r.rig_id, r.phase, r.error, r.bench.log_tail())
        accounts = account(lab, db)
        for acc in accounts:
            assert acc.complete, acc
        # The stories the panels below show happened on the firmware's side.
        by_id = {r.rig_id: r for r in lab.rigs}
        sweeps = by_id[RIG].obs.named("eis_done")
        assert sweeps and int(sweeps[0].body["measured"]) >= 10, sweeps
        alarms = by_id["dendrite"].obs.named("echem_alarm")
        assert any(a.body.get("kind") == "soft_short" for a in alarms), alarms
        ran_ns = time.time_ns()
        # The gateway's UTC mapping of a rig clock that runs faster than real time runs
        # ahead of the wall clock (docs/demo.md, "Limits"), by at most the virtual time.
        end_ns = ran_ns + int(DURATION_S + 60) * 10**9
        for r in lab.rigs:
            assert fieldrig(["analyze", "--influx", db.url, "--site", SITE, "--rig", r.rig_id,
                             "--run", RUN, "--area-cm2", str(AREA_CM2)]) == 0
        assert fieldrig(["db", "backfill", "--influx", db.url, "--start-ns", str(start_ns),
                         "--end-ns", str(end_ns)]) == 0
        # The window holds the whole run: every stored sample is inside it.
        stored = sum(acc.stored for acc in accounts)
        inside = _series(db, f'SELECT count("seq") FROM "cell_sample" WHERE time >= '
                             f"{start_ns} AND time <= {end_ns}")
        assert _values(inside) == [stored]
        yield BenchRun(db, start_ns, end_ns, ran_ns, tuple(by_id))


@pytest.mark.parametrize(("name", "rp"), CASES)
def test_every_panel_query_returns_data_from_the_bench_run(bench: BenchRun, name: str,
                                                           rp: str) -> None:
    q = dashboards.render(dashboards.QUERIES[name].text, _variables(rp), bench.start_ns,
                          bench.end_ns, "10s")
    assert _values(_series(bench.db, q)), q


def test_a_bench_run_dead_letters_nothing(bench: BenchRun) -> None:
    # No bench component publishes a malformed message, so these panels stay empty;
    # the pipeline's own error counter agrees.
    for name in DEAD_LETTER_QUERIES:
        q = dashboards.render(dashboards.QUERIES[name].text, {}, bench.start_ns, bench.end_ns)
        assert not _values(_series(bench.db, q)), q
    q = dashboards.render(dashboards.QUERIES["ingest_errors"].text, {}, bench.start_ns,
                          bench.end_ns, "10s")
    dead = [row[1] for s in _series(bench.db, q) for row in s["values"] if row[1] is not None]
    assert dead and set(dead) == {0}, q


def test_variables_and_annotations_offer_the_bench_run(bench: BenchRun) -> None:
    got = {}
    for name, q in dashboards.VARIABLE_QUERIES.items():
        rendered = dashboards.render(q, {"site": SITE, "rig": ".*"}, bench.start_ns,
                                     bench.end_ns)
        got[name] = sorted(v[1] for s in _series(bench.db, rendered) for v in s["values"])
    assert got == {"site": [SITE], "rig": sorted(bench.rigs), "run": [RUN]}
    anno = dashboards.render(dashboards.ANNOTATION_QUERY, _variables(), bench.start_ns,
                             bench.end_ns)
    titles = {row[1] for s in _series(bench.db, anno) for row in s["values"]}
    assert {"recipe_started", "eis_started", "eis_done", "recipe_step"} <= titles, titles


# uid -> does the rule fire on this bench run? (the dendrite rig raised an alarm; nothing
# overheated, every rig sent samples, the ingester kept up, nothing was dead-lettered)
ALERT_EXPECTED = {
    "fieldrig-alarm-event": True,
    "fieldrig-overtemp": False,
    "fieldrig-rig-silent": False,
    "fieldrig-ingest-lag": False,
    "fieldrig-dead-letters": False,
}
ALERT_CASES = [
    pytest.param(a, ALERT_EXPECTED[a.uid], id=a.uid, marks=_no_bench_data(a.query))
    for a in dashboards.ALERTS]


@pytest.mark.parametrize(("rule", "fires"), ALERT_CASES)
def test_alert_rules_judge_the_bench_run(bench: BenchRun, rule: dashboards.AlertSpec,
                                         fires: bool) -> None:
    # As Grafana evaluates right after the run: query A over the rule's own window,
    # B the last value per series, C the threshold.
    q = dashboards.render(dashboards.QUERIES[rule.query].text, {"site": SITE},
                          bench.ran_ns - rule.window_s * 10**9, bench.ran_ns)
    series = _series(bench.db, q)
    last = _last_per_series(series)
    if rule.query in DEAD_LETTER_QUERIES:
        assert not last, q  # no data: the rule's no-data state is OK
    else:
        assert last, q
    compare = operator.gt if rule.op == "gt" else operator.lt
    assert any(compare(v, rule.threshold) for v in last) is fires, (q, last)
    if rule.query == "sample_count":
        assert {s["tags"]["rig"] for s in series} == set(bench.rigs), series
