"""Dashboards as code: valid Grafana JSON from the builder library, provisioning files,
alert rules built on panel queries, and every query run against a real InfluxDB that
was filled through the real pipeline (broker -> ingester) and the analytics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Filled
from grafana_foundation_sdk.models import dashboard as dm

from fieldrig_cloud import dashboards
from fieldrig_cloud.cli import main
from fieldrig_hil.services import InfluxDB

BUILT = {name: dashboards.dashboard_json(make()) for name, make in dashboards.DASHBOARDS.items()}


def test_dashboards_are_grafana_json_the_sdk_reads_back() -> None:
    uids = set()
    for name, j in BUILT.items():
        assert j["uid"].startswith("fieldrig-") and j["title"] and j["schemaVersion"] >= 36
        uids.add(j["uid"])
        # The SDK's own model parses it back to the same document.
        again = json.loads(json.dumps(dm.Dashboard.from_json(j).to_json(), default=lambda o:
                                      o.to_json()))
        assert again["panels"] == json.loads(json.dumps(j["panels"])), name
        defined = {v["name"] for v in j.get("templating", {}).get("list", [])}
        for p in j["panels"]:
            assert p["type"] in {"timeseries", "table", "stat", "state-timeline", "xychart",
                                 "bargauge"}
            assert p["datasource"]["uid"] == dashboards.DATASOURCE_UID
            assert p["gridPos"]["w"] > 0 and p["gridPos"]["h"] > 0
            refs = [t["refId"] for t in p["targets"]]
            assert refs and len(refs) == len(set(refs))
            for t in p["targets"]:
                used = set(re.findall(r"\$(\w+)", t["query"])) - {"timeFilter", "__interval",
                                                                   "tag_rig", "col"}
                assert used <= defined, (name, p["title"], used - defined)
    assert len(uids) == len(BUILT)
    anno = BUILT["rig"]["annotations"]["list"][0]
    assert anno["datasource"]["uid"] == dashboards.DATASOURCE_UID
    assert anno["target"]["query"] == dashboards.ANNOTATION_QUERY


def test_alert_rules_reference_panel_queries_and_their_own_refs() -> None:
    panel_queries = {t["query"] for j in BUILT.values() for p in j["panels"]
                     for t in p["targets"]}
    rules = dashboards.alert_rules_json()
    assert len(rules) == len(dashboards.ALERTS)
    for r in rules:
        data = {d["refId"]: d for d in r["data"]}
        assert r["condition"] in data
        a = data["A"]
        assert a["datasourceUid"] == dashboards.DATASOURCE_UID
        assert a["model"]["query"] in panel_queries, r["title"]
        assert data["B"]["model"]["expression"] == "A"
        assert data["C"]["model"]["expression"] == "B"
        assert a["relativeTimeRange"]["from"] > 0


def test_build_writes_dashboards_and_provisioning(tmp_path: Path) -> None:
    assert main(["dashboards", "build", "--out", str(tmp_path),
                 "--influx-url", "https://influxdb.lab.invalid"]) == 0
    for name in dashboards.DASHBOARDS:
        assert json.loads((tmp_path / f"{name}.json").read_text()) == BUILT[name]
    def load(rel: str) -> Any:
        text = (tmp_path / "provisioning" / rel).read_text()
        return json.loads(text.split("\n", 1)[1])  # JSON after the comment line = YAML
    ds = load("datasources/fieldrig.yaml")["datasources"][0]
    assert (ds["uid"], ds["url"], ds["jsonData"]["dbName"]) == (
        dashboards.DATASOURCE_UID, "https://influxdb.lab.invalid", "fieldrig")
    assert load("dashboards/fieldrig.yaml")["providers"][0]["type"] == "file"
    group = load("alerting/fieldrig.yaml")["groups"][0]
    assert [r["uid"] for r in group["rules"]] == [a.uid for a in dashboards.ALERTS]


def test_committed_dashboards_are_up_to_date() -> None:
    # dashboards/ in the repo is the build output; a change to dashboards.py must be
    # followed by `fieldrig dashboards build`.
    root = Path(__file__).resolve().parents[2] / "dashboards"
    for name in dashboards.DASHBOARDS:
        assert json.loads((root / f"{name}.json").read_text()) == BUILT[name], name


def test_render_interpolates_like_grafana() -> None:
    q = dashboards.render('SELECT x FROM "$rp"."m" WHERE $timeFilter AND "rig" =~ /^$rig$/ '
                          "GROUP BY time($__interval)",
                          {"rp": "agg_10s", "rig": "rig.a"}, 2_000_000, 5_000_000, "1m")
    assert q == ('SELECT x FROM "agg_10s"."m" WHERE time >= 2ms and time <= 5ms AND '
                 '"rig" =~ /^rig\\.a$/ GROUP BY time(1m)')


# --- against a real InfluxDB filled through the pipeline ------------------------------

def _run(db: InfluxDB, q: str) -> list[dict[str, Any]]:
    r = httpx.post(f"{db.url}/query", params={"db": "fieldrig", "q": q}, timeout=30)
    r.raise_for_status()
    result = r.json()["results"][0]
    assert "error" not in result, (q, result)
    series: list[dict[str, Any]] = result.get("series", [])
    return series


ALL_QUERIES = sorted({q for names in dashboards.all_panel_queries().values() for q in names})
# Queries on "$rp" run once per resolution (raw and both aggregates, after a backfill).
CASES = [(n, rp) for n in ALL_QUERIES for rp in dashboards.RP_VALUES
         if rp == "raw" or '"$rp"' in dashboards.QUERIES[n].text]


@pytest.mark.integration
@pytest.mark.parametrize(("name", "rp"), CASES)
def test_every_panel_query_returns_data(filled: Filled, name: str,
                                        rp: str) -> None:
    db, start, end = filled.db, filled.start, filled.end
    variables = {"site": "lab-1", "rig": "rig-a", "run": "ccd-1", "rp": rp}
    q = dashboards.render(dashboards.QUERIES[name].text, variables, start, end, "10s")
    series = _run(db, q)
    values = [v for s in series for row in s["values"] for v in row[1:] if v is not None]
    assert values, q


@pytest.mark.integration
def test_variables_annotations_and_all_selections(filled: Filled) -> None:
    db, start, end = filled.db, filled.start, filled.end
    got = {}
    for name, q in dashboards.VARIABLE_QUERIES.items():
        rendered = dashboards.render(q, {"site": "lab-1", "rig": ".*"}, start, end)
        got[name] = sorted(v[1] for s in _run(db, rendered) for v in s["values"])
    assert got == {"site": ["lab-1"], "rig": ["rig-a", "rig-b"], "run": ["ccd-1", "run-b"]}
    anno = dashboards.render(dashboards.ANNOTATION_QUERY, {"site": "lab-1", "rig": "rig-a"},
                             start, end)
    titles = [row[1] for s in _run(db, anno) for row in s["values"]]
    assert titles == ["recipe_step", "hard_short"]
    # "All" (regex .*) sees both rigs.
    q = dashboards.render(dashboards.QUERIES["fleet_latest"].text, {"site": ".*"}, start, end)
    assert {s["tags"]["rig"] for s in _run(db, q)} == {"rig-a", "rig-b"}


@pytest.mark.integration
def test_alert_queries_fire_on_the_filled_data(filled: Filled) -> None:
    db, start, end = filled.db, filled.start, filled.end
    by_uid = {a.uid: a for a in dashboards.ALERTS}
    alarm = dashboards.render(dashboards.QUERIES[by_uid["fieldrig-alarm-event"].query].text,
                              {"site": "lab-1"}, start, end)
    [series] = _run(db, alarm)
    assert series["tags"]["rig"] == "rig-a" and series["values"][0][1] == 1
    dead = dashboards.render(dashboards.QUERIES["dead_letter_count"].text, {}, start, end)
    assert _run(db, dead)[0]["values"][0][1] == 1
