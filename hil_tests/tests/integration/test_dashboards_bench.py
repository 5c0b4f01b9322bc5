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

Panels that no bench run can fill are strict expected failures naming the reason
(``NO_BENCH_DATA``, empty now: the set-point panels are filled from the gateway's status
polls, the alarm panels from the firmware's classified alarm events); when a gap is
closed the entry must go. The dead-letter panels have their own test: a healthy bench
run dead-letters nothing. The analytics' results are checked against what the firmware
itself sent: its samples' charge and count, its alarms and recipe results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
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

# query name -> why a bench run cannot fill it (a strict xfail; none left).
NO_BENCH_DATA: dict[str, str] = {}
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
class Firmware:
    """What one rig's firmware sent on its link (the demo's tap): the truth the stored
    analytics must agree with."""

    samples: int
    charge_mah: float    # ∫|I| dt over its samples, on its own clock
    duration_s: float    # first to last sample, on its own clock
    events: list[dict[str, Any]]  # EVENT bodies, in order


@dataclass(frozen=True)
class BenchRun:
    db: InfluxDB
    start_ns: int
    end_ns: int
    ran_ns: int  # wall clock once the run was stored: where the alert rules evaluate
    rigs: tuple[str, ...]
    firmware: dict[str, Firmware]


def _firmware(r: Any) -> Firmware:
    ss = sorted((s for _t, _boot, s in r.obs.samples), key=lambda s: s.seq)
    up = np.array([s.uptime_s + s.uptime_us / 1e6 for s in ss])
    i_ma = np.array([s.cell_current_ma for s in ss])
    charge = float(np.sum(np.abs(i_ma[1:] + i_ma[:-1]) / 2 * np.diff(up))) / 3600
    return Firmware(len(ss), charge, float(up[-1] - up[0]), [e.body for e in r.obs.events])


def _series(db: InfluxDB, q: str) -> list[dict[str, Any]]:
    """The query's series (a query InfluxDB refuses fails the test with its error)."""
    return cast("list[dict[str, Any]]", db.query(q))


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
        yield BenchRun(db, start_ns, end_ns, ran_ns, tuple(by_id),
                       {r.rig_id: _firmware(r) for r in lab.rigs})


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


def _stored(db: InfluxDB, measurement: str) -> dict[str, dict[str, Any]]:
    """rig -> the run's one stored analytics point of ``measurement`` (keep policy)."""
    out = {}
    for series in _series(db, f'SELECT * FROM "keep"."{measurement}" WHERE "site" = '
                              f"'{SITE}' AND \"run\" = '{RUN}' GROUP BY \"rig\""):
        [row] = series["values"]
        out[series["tags"]["rig"]] = dict(zip(series["columns"], row, strict=True))
    return out


def test_run_summaries_agree_with_what_the_firmware_sent(bench: BenchRun) -> None:
    # The bench's rig clock runs ahead of the gateway's: most stored UTC times are 1 ns
    # apart (docs/demo.md, "Limits"). Charge and duration are on the firmware's clock;
    # impedance points share the telemetry numbers and are no missing samples.
    summaries = _stored(bench.db, "run_summary")
    assert set(summaries) == set(bench.rigs)
    for rig, fw in bench.firmware.items():
        got = summaries[rig]
        assert (got["samples"], got["missing_samples"], got["dropped_samples"]) == (
            fw.samples, 0, 0), (rig, got)
        assert got["charge_mah"] == pytest.approx(fw.charge_mah, rel=1e-3), (rig, got)
        assert got["duration_s"] == pytest.approx(fw.duration_s, abs=1e-3), (rig, got)
    assert bench.firmware[RIG].charge_mah > 0.01  # the ladder moved charge


def test_ccd_results_agree_with_the_firmware(bench: BenchRun) -> None:
    ccd = _stored(bench.db, "ccd_result")
    for rig, fw in bench.firmware.items():
        got = ccd[rig]
        done = [e for e in fw.events if e.get("event") == "recipe_done"
                and e.get("ccd_ma_cm2") is not None]
        shorts = [e for e in fw.events if e.get("event") == "echem_alarm"
                  and e.get("kind") in ("soft_short", "hard_short")]
        if done:  # the ladder's own result
            assert (got["source"], got["ccd_ma_cm2"]) == (
                "firmware_recipe", pytest.approx(done[-1]["ccd_ma_cm2"])), (rig, got)
        elif shorts:  # the firmware's short alarm, placed on its samples
            assert (got["source"], got["detection"]) == (
                "firmware_alarm", shorts[0]["kind"]), (rig, got)
        else:  # no short seen by the firmware, and none invented from a rest
            assert got["ccd_ma"] is None and got["detection"] == "none", (rig, got)
    # The dendrite rig's story: the detector's soft short while fast plating at 2.6 mA/cm²
    # (demo_programs.dendrite_recipe), after the 0.3 mA/cm² baseline passed.
    dendrite = ccd["dendrite"]
    assert dendrite["source"] == "firmware_alarm"
    assert dendrite["ccd_ma_cm2"] == pytest.approx(2.6, rel=0.01), dendrite
    assert dendrite["last_safe_ma_cm2"] == pytest.approx(0.3, rel=0.01), dendrite
