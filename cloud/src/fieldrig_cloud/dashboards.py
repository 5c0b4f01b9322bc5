"""Grafana dashboards, datasource and alert rules, built as code (docs/grafana.md).

Built with grafana-foundation-sdk, Grafana Labs' own generated builders (typed, kept in
step with Grafana's schemas; grafanalib is community-maintained and lags new panel
types). The SDK has no InfluxDB query type, so ``InfluxQL`` below is a small one of
ours: a raw InfluxQL target as Grafana's InfluxDB datasource stores it.

Every query is a named constant in ``QUERIES``, used by panels *and* alert rules, so
the tests can run each one against a real InfluxDB and prove the rules watch the same
series the dashboards show.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from grafana_foundation_sdk.builders import (
    alerting,
    bargauge,
    stat,
    statetimeline,
    table,
    timeseries,
    xychart,
)
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import expr as gexpr
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import alerting as alerting_models
from grafana_foundation_sdk.models import dashboard as dm

from fieldrig_cloud.analytics import CIRCUIT

DATASOURCE_UID = "fieldrig-influxdb"
DATASOURCE_NAME = "fieldrig InfluxDB"
DS = dm.DataSourceRef(type_val="influxdb", uid=DATASOURCE_UID)
EXPR_DS = dm.DataSourceRef(type_val="__expr__", uid="__expr__")
FOLDER_UID = "fieldrig"
FOLDER_TITLE = "fieldrig"

# Filters shared by most queries. Regex matches let "All" and multi-select work.
SITE = "\"site\" =~ /^$site$/"
RIG = "\"rig\" =~ /^$rig$/"
RUN = "\"run\" =~ /^$run$/"


@dataclass(frozen=True, slots=True)
class Q:
    """One InfluxQL query; ``fmt`` is Grafana's result format for the panel."""

    text: str
    fmt: Literal["time_series", "table"] = "time_series"
    alias: str = ""


QUERIES: dict[str, Q] = {
    # fleet
    "fleet_state": Q('SELECT last("rig_state") FROM "cell_sample" WHERE $timeFilter AND '
                     f'{SITE} GROUP BY time($__interval), "rig" fill(previous)', alias="$tag_rig"),
    "fleet_latest": Q('SELECT last("cell_voltage_v") AS "V", last("cell_current_ma") AS "mA", '
                      'last("cell_temp_c") AS "°C", last("stack_pressure_mpa") AS "MPa", '
                      'last("rig_state") AS "state" FROM "cell_sample" WHERE $timeFilter AND '
                      f'{SITE} GROUP BY "rig"', "table"),
    "alarm_count": Q('SELECT count("title") FROM "keep"."event" WHERE $timeFilter AND '
                     f"\"severity\" = 'alarm' AND {SITE} GROUP BY \"rig\"", "table"),
    # kind / row: the firmware's diagnosis (echem alarm kind, safety row) of an alarm.
    "recent_events": Q('SELECT "rig", "event", "severity", "kind", "row", "text" FROM '
                       f'"keep"."event" WHERE $timeFilter AND {SITE} ORDER BY time DESC '
                       "LIMIT 100", "table"),
    "gateways_online": Q('SELECT last("online") FROM "gateway_health" WHERE $timeFilter AND '
                         f'{SITE} GROUP BY "gateway"', "table"),
    "max_temp": Q('SELECT max("cell_temp_c") FROM "cell_sample" WHERE $timeFilter AND '
                  f'{SITE} GROUP BY "rig"', "table"),
    "sample_count": Q('SELECT count("seq") FROM "cell_sample" WHERE $timeFilter AND '
                      f'{SITE} GROUP BY "rig"', "table"),
    # rig detail ($rp: raw, agg_10s or agg_1m; the aggregates keep the raw field names)
    "voltage": Q('SELECT mean("cell_voltage_v") AS "V" FROM "$rp"."cell_sample" WHERE '
                 f"$timeFilter AND {SITE} AND {RIG} AND {RUN} "
                 "GROUP BY time($__interval) fill(none)"),
    "current": Q('SELECT mean("cell_current_ma") AS "I (mA)" FROM "$rp"."cell_sample" WHERE '
                 f"$timeFilter AND {SITE} AND {RIG} AND {RUN} "
                 "GROUP BY time($__interval) fill(none)"),
    "current_setpoint": Q('SELECT mean("current_setpoint_ma") AS "I set (mA)" FROM '
                          f'"$rp"."actuator_state" WHERE $timeFilter AND {SITE} AND {RIG} AND '
                          f"{RUN} GROUP BY time($__interval) fill(none)"),
    "temperature": Q('SELECT mean("cell_temp_c") AS "T (°C)" FROM "$rp"."cell_sample" WHERE '
                     f"$timeFilter AND {SITE} AND {RIG} AND {RUN} "
                     "GROUP BY time($__interval) fill(none)"),
    "temp_setpoint": Q('SELECT mean("temp_setpoint_c") AS "T set (°C)", '
                       'mean("heater_duty") AS "heater duty" FROM "$rp"."actuator_state" '
                       f"WHERE $timeFilter AND {SITE} AND {RIG} AND {RUN} "
                       "GROUP BY time($__interval) fill(none)"),
    "pressure": Q('SELECT mean("stack_pressure_mpa") AS "P (MPa)" FROM "$rp"."cell_sample" '
                  f"WHERE $timeFilter AND {SITE} AND {RIG} AND {RUN} "
                  "GROUP BY time($__interval) fill(none)"),
    "pressure_setpoint": Q('SELECT mean("pressure_setpoint_mpa") AS "P set (MPa)" FROM '
                           f'"$rp"."actuator_state" WHERE $timeFilter AND {SITE} AND {RIG} '
                           f"AND {RUN} GROUP BY time($__interval) fill(none)"),
    "impedance": Q('SELECT mean("z_mag_ohm") AS "|Z| (Ω)", mean("z_phase_deg") AS "phase (°)" '
                   f'FROM "$rp"."impedance" WHERE $timeFilter AND {SITE} AND {RIG} AND {RUN} '
                   "GROUP BY time($__interval) fill(none)"),
    "rig_state": Q('SELECT last("rig_state") AS "state" FROM "$rp"."cell_sample" WHERE '
                   f"$timeFilter AND {SITE} AND {RIG} GROUP BY time($__interval) fill(previous)"),
    "rig_events": Q('SELECT "title", "text", "severity", "kind", "row" FROM "keep"."event" '
                    f"WHERE $timeFilter AND {SITE} AND {RIG}", "table"),
    # EIS
    "nyquist": Q('SELECT "z_real_ohm" AS "Z′ (Ω)", "z_imag_ohm" * -1 AS "−Z″ (Ω)" FROM '
                 f'"keep"."eis_spectrum" WHERE $timeFilter AND {SITE} AND {RIG} AND {RUN}',
                 "table"),
    "bode": Q('SELECT "freq_hz" AS "f (Hz)", "z_mag_ohm" AS "|Z| (Ω)" FROM "keep"."eis_spectrum" '
              f"WHERE $timeFilter AND {SITE} AND {RIG} AND {RUN}", "table"),
    "eis_fit": Q('SELECT mean("r_bulk_ohm") AS "R bulk", mean("r_gb_ohm") AS "R grain boundary", '
                 'mean("r_interface_ohm") AS "R interface" FROM "keep"."eis_fit" WHERE '
                 f"$timeFilter AND {SITE} AND {RIG} AND {RUN} GROUP BY time($__interval) "
                 "fill(none)"),
    "eis_fit_quality": Q('SELECT "rmse_rel", "circuit", "n_points" FROM "keep"."eis_fit" WHERE '
                         f"$timeFilter AND {SITE} AND {RIG} AND {RUN}", "table"),
    # CCD and run summaries
    # source: the firmware's recipe result, its short alarm, or the samples (analytics).
    "ccd_table": Q('SELECT "ccd_ma", "ccd_ma_cm2", "short_step", "time_to_short_s", "detection", '
                   f'"source" FROM "keep"."ccd_result" WHERE $timeFilter AND {SITE} GROUP BY '
                   '"rig", "run"', "table"),
    "ccd_bars": Q('SELECT last("ccd_ma") AS "CCD (mA)" FROM "keep"."ccd_result" WHERE '
                  f'$timeFilter AND {SITE} GROUP BY "rig", "run"', "table"),
    "run_summary": Q('SELECT "duration_s", "charge_mah", "cycles", "samples", "time_to_short_s", '
                     '"max_temp_c" FROM "keep"."run_summary" WHERE $timeFilter AND '
                     f'{SITE} GROUP BY "rig", "run"', "table"),
    # pipeline
    "ingest_rate": Q('SELECT mean("point_rate") AS "samples/s", mean("msg_rate") AS "messages/s" '
                     'FROM "pipeline_health" WHERE $timeFilter GROUP BY time($__interval), '
                     '"ingester" fill(none)', alias="$tag_ingester $col"),
    "ingest_lag": Q('SELECT max("data_lag_s") AS "data lag (s)", max("ack_latency_s") AS '
                    '"ack latency (s)" FROM "pipeline_health" WHERE $timeFilter GROUP BY '
                    'time($__interval), "ingester" fill(none)', alias="$tag_ingester $col"),
    "ingest_errors": Q('SELECT max("dead_letters_total") AS "dead letters", '
                       'max("write_retries_total") AS "write retries", max("reconnects_total") '
                       'AS "reconnects" FROM "pipeline_health" WHERE $timeFilter GROUP BY '
                       'time($__interval), "ingester" fill(none)', alias="$tag_ingester $col"),
    "ingest_max_lag": Q('SELECT max("data_lag_s") FROM "pipeline_health" WHERE $timeFilter '
                        'GROUP BY "ingester"', "table"),
    "dead_letter_count": Q('SELECT count("reason") FROM "keep"."dead_letter" WHERE $timeFilter',
                           "table"),
    "dead_letters": Q('SELECT "rig", "code", "reason", "topic" FROM "keep"."dead_letter" WHERE '
                      "$timeFilter ORDER BY time DESC LIMIT 100", "table"),
    "gateway_online": Q('SELECT last("online") AS "online" FROM "gateway_health" WHERE '
                        '$timeFilter GROUP BY time($__interval), "gateway" fill(previous)',
                        alias="$tag_gateway"),
}

ANNOTATION_QUERY = ('SELECT "title", "text" FROM "keep"."event" WHERE $timeFilter AND '
                    f"{SITE} AND {RIG}")


# --- our InfluxQL query type for the SDK ------------------------------------------------

class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL target of Grafana's InfluxDB datasource."""

    def __init__(self, ref_id: str, q: Q) -> None:
        self.ref_id = ref_id
        self.q = q

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "refId": self.ref_id, "datasource": {"type": "influxdb", "uid": DATASOURCE_UID},
            "query": self.q.text, "rawQuery": True, "resultFormat": self.q.fmt,
        }
        if self.q.alias:
            out["alias"] = self.q.alias
        return out


class InfluxQL(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, name: str, ref_id: str = "A") -> None:
        self.name = name
        self._q = InfluxQLQuery(ref_id, QUERIES[name])

    def build(self) -> cogvariants.Dataquery:
        return self._q


class _InfluxAnnotationTarget(dm.AnnotationTarget):
    def to_json(self) -> dict[str, object]:
        return {"query": ANNOTATION_QUERY, "rawQuery": True, "resultFormat": "table",
                "refId": "Anno"}


class InfluxAnnotationTarget(cogbuilder.Builder[dm.AnnotationTarget]):
    def build(self) -> dm.AnnotationTarget:
        return _InfluxAnnotationTarget()


# --- dashboards -------------------------------------------------------------------------

def _var(name: str, query: str, include_all: bool = True) -> dash.QueryVariable:
    v = (dash.QueryVariable(name).label(name).datasource(DS).query(query)
         .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
    if include_all:
        v = v.include_all(True).multi(True).all_value(".*")
    return v


VARIABLE_QUERIES = {
    "site": 'SHOW TAG VALUES FROM "cell_sample" WITH KEY = "site"',
    "rig": 'SHOW TAG VALUES FROM "cell_sample" WITH KEY = "rig" WHERE "site" =~ /^$site$/',
    "run": 'SHOW TAG VALUES FROM "cell_sample" WITH KEY = "run" WHERE "site" =~ /^$site$/ '
           'AND "rig" =~ /^$rig$/',
}
RP_VALUES = ("raw", "agg_10s", "agg_1m")


def _site_rig_run(d: dash.Dashboard, rig: bool = True, run: bool = True) -> dash.Dashboard:
    d = d.with_variable(_var("site", VARIABLE_QUERIES["site"]))
    if rig:
        d = d.with_variable(_var("rig", VARIABLE_QUERIES["rig"]))
    if run:
        d = d.with_variable(_var("run", VARIABLE_QUERIES["run"]))
    return d


def _ts(title: str, *names: str, unit: str = "", height: int = 8,
        width: int = 12) -> timeseries.Panel:
    p = timeseries.Panel().title(title).datasource(DS).height(height).span(width)
    for i, n in enumerate(names):
        p = p.with_target(InfluxQL(n, chr(ord("A") + i)))
    return p.unit(unit) if unit else p


def _table(title: str, name: str, height: int = 8, width: int = 12) -> table.Panel:
    return (table.Panel().title(title).datasource(DS).height(height).span(width)
            .with_target(InfluxQL(name)))


def _base(uid: str, title: str, tags: list[str]) -> dash.Dashboard:
    return (dash.Dashboard(title).uid(uid).tags(["fieldrig", *tags]).editable()
            .time("now-6h", "now").refresh("30s").timezone("utc"))


def fleet_dashboard() -> dash.Dashboard:
    d = _site_rig_run(_base("fieldrig-fleet", "fieldrig: fleet overview", ["fleet"]),
                      rig=False, run=False)
    return (d.with_panel(statetimeline.Panel().title("Rig state (rig_state)").datasource(DS)
                         .height(8).span(24).with_target(InfluxQL("fleet_state")))
            .with_panel(_table("Latest values per rig", "fleet_latest", width=12))
            .with_panel(_table("Alarms per rig (dendrite, short, interlock)", "alarm_count",
                               width=6))
            .with_panel(_table("Gateways online", "gateways_online", width=6))
            .with_panel(_table("Max cell temperature per rig", "max_temp", width=12))
            .with_panel(_table("Samples per rig in range", "sample_count", width=12))
            .with_panel(_table("Recent events", "recent_events", height=10, width=24)))


def rig_dashboard() -> dash.Dashboard:
    d = _site_rig_run(_base("fieldrig-rig", "fieldrig: rig detail", ["rig"]))
    d = d.with_variable(dash.CustomVariable("rp").label("resolution (retention policy)")
                        .values(",".join(RP_VALUES)))
    anno = (dash.AnnotationQuery().name("Rig events").datasource(DS).enable(True)
            .icon_color("red").target(InfluxAnnotationTarget()))
    return (d.annotation(anno)
            .with_panel(_ts("Cell voltage", "voltage", unit="volt"))
            .with_panel(_ts("Cell current and set-point", "current", "current_setpoint",
                            unit="mA"))
            .with_panel(_ts("Temperature, set-point, heater duty", "temperature",
                            "temp_setpoint", unit="celsius"))
            .with_panel(_ts("Stack pressure and set-point", "pressure", "pressure_setpoint",
                            unit="suffix: MPa"))
            .with_panel(_ts("Impedance |Z| and phase (dendrite watch)", "impedance"))
            .with_panel(statetimeline.Panel().title("Rig state").datasource(DS).height(8)
                        .span(12).with_target(InfluxQL("rig_state")))
            .with_panel(_table("Events", "rig_events", width=24)))


def eis_dashboard() -> dash.Dashboard:
    d = _site_rig_run(_base("fieldrig-eis", "fieldrig: EIS", ["eis"]))
    nyquist = (xychart.Panel().title("Nyquist (−Z″ vs Z′)").datasource(DS).height(12).span(12)
               .with_target(InfluxQL("nyquist")))
    bode = (xychart.Panel().title("Bode |Z| vs f").datasource(DS).height(12).span(12)
            .with_target(InfluxQL("bode")))
    return (d.with_panel(nyquist).with_panel(bode)
            .with_panel(_ts(f"Fitted resistances ({CIRCUIT})", "eis_fit",
                            unit="ohm", width=16))
            .with_panel(_table("Fit quality", "eis_fit_quality", width=8)))


def ccd_dashboard() -> dash.Dashboard:
    d = _site_rig_run(_base("fieldrig-ccd", "fieldrig: CCD and runs", ["ccd"]),
                      rig=False, run=False).time("now-30d", "now")
    return (d.with_panel(bargauge.Panel().title("Critical current density per run")
                         .datasource(DS).height(8).span(12).unit("mA")
                         .with_target(InfluxQL("ccd_bars")))
            .with_panel(_table("CCD results", "ccd_table", width=12))
            .with_panel(_table("Run summaries", "run_summary", height=10, width=24)))


def pipeline_dashboard() -> dash.Dashboard:
    d = _base("fieldrig-pipeline", "fieldrig: pipeline health", ["pipeline"]).time("now-1h",
                                                                                   "now")
    return (d.with_panel(_ts("Ingest rate", "ingest_rate", unit="ops"))
            .with_panel(_ts("Lag", "ingest_lag", unit="s"))
            .with_panel(_ts("Errors (cumulative)", "ingest_errors"))
            .with_panel(_table("Max data lag per ingester", "ingest_max_lag"))
            .with_panel(stat.Panel().title("Dead letters in range").datasource(DS).height(8)
                        .span(6).with_target(InfluxQL("dead_letter_count")))
            .with_panel(statetimeline.Panel().title("Gateways online").datasource(DS)
                        .height(8).span(6).with_target(InfluxQL("gateway_online")))
            .with_panel(_table("Dead letters", "dead_letters", height=10, width=24)))


DASHBOARDS = {
    "fleet": fleet_dashboard, "rig": rig_dashboard, "eis": eis_dashboard,
    "ccd": ccd_dashboard, "pipeline": pipeline_dashboard,
}


def dashboard_json(builder: dash.Dashboard) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return out


# --- alert rules ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AlertSpec:
    uid: str
    title: str
    query: str
    op: Literal["gt", "lt"]
    threshold: float
    window_s: int
    for_: str
    summary: str
    no_data: Literal["Alerting", "NoData", "OK"] = "OK"


ALERTS = [
    AlertSpec("fieldrig-alarm-event", "Rig alarm (dendrite, short, interlock)", "alarm_count",
              "gt", 0, 600, "0s", "Rig {{ $labels.rig }} raised an alarm event"),
    AlertSpec("fieldrig-overtemp", "Cell over temperature", "max_temp", "gt", 90, 300, "1m",
              "Rig {{ $labels.rig }} above 90 °C"),
    AlertSpec("fieldrig-rig-silent", "Rig sends no telemetry", "sample_count", "lt", 1, 300,
              "5m", "Rig {{ $labels.rig }} sent nothing for 5 minutes", "Alerting"),
    AlertSpec("fieldrig-ingest-lag", "Ingest lag above 60 s", "ingest_max_lag", "gt", 60, 300,
              "2m", "Ingester {{ $labels.ingester }} is behind"),
    AlertSpec("fieldrig-dead-letters", "Dead letters", "dead_letter_count", "gt", 0, 900, "0s",
              "Malformed or refused messages: see the pipeline dashboard"),
]


def alert_rule(spec: AlertSpec) -> alerting.Rule:
    """A: the panel's InfluxQL; B: reduce to the last value per series; C: threshold."""
    a = (alerting.Query("A").datasource_uid(DATASOURCE_UID)
         .relative_time_range(alerting_models.RelativeTimeRange(from_val=spec.window_s,
                                                                to=0))
         .model(InfluxQL(spec.query, "A")))
    b = (alerting.Query("B").datasource_uid("__expr__")
         .model(gexpr.TypeReduce().ref_id("B").expression("A").reducer("last")
                .datasource(EXPR_DS)))
    c = (alerting.Query("C").datasource_uid("__expr__")
         .model(gexpr.TypeThreshold().ref_id("C").expression("B").datasource(EXPR_DS)
                .conditions([gexpr.ExprTypeThresholdConditions().evaluator(
                    gexpr.ExprTypeThresholdConditionsEvaluator().type(spec.op)
                    .params([spec.threshold]))])))
    return (alerting.Rule(spec.title).uid(spec.uid).condition("C").queries([a, b, c])
            .for_val(spec.for_).no_data_state(spec.no_data).exec_err_state("Error")
            .folder_uid(FOLDER_UID).rule_group("fieldrig").org_id(1)
            .annotations({"summary": spec.summary}).labels({"team": "fieldrig"}))


def alert_rules_json() -> list[dict[str, Any]]:
    """Rules as Grafana's provisioning HTTP API takes them (POST /api/v1/provisioning/...)."""
    return [json.loads(json.dumps(alert_rule(s).build(), cls=JSONEncoder)) for s in ALERTS]


def alert_provisioning(rules: list[dict[str, Any]]) -> dict[str, Any]:
    """The same rules as a file-provisioning document (provisioning/alerting/)."""
    file_rules = []
    for r in rules:
        fr = {k: v for k, v in r.items() if k not in ("folderUID", "orgID", "ruleGroup")}
        file_rules.append(fr)
    return {"apiVersion": 1, "groups": [{"orgId": 1, "name": "fieldrig", "folder": FOLDER_TITLE,
                                         "interval": "1m", "rules": file_rules}]}


# --- provisioning files -----------------------------------------------------------------

def datasource_provisioning(url: str = "http://127.0.0.1:8086",
                            database: str = "fieldrig") -> dict[str, Any]:
    return {"apiVersion": 1, "datasources": [{
        "name": DATASOURCE_NAME, "uid": DATASOURCE_UID, "type": "influxdb", "access": "proxy",
        "url": url, "jsonData": {"dbName": database, "httpMode": "POST", "timeInterval": "1s"},
        "isDefault": True, "editable": False}]}


def dashboard_provider(path: str = "/etc/grafana/dashboards/fieldrig") -> dict[str, Any]:
    return {"apiVersion": 1, "providers": [{
        "name": "fieldrig", "orgId": 1, "folder": FOLDER_TITLE, "folderUid": FOLDER_UID,
        "type": "file", "disableDeletion": False, "allowUiUpdates": False,
        "options": {"path": path, "foldersFromFilesStructure": False}}]}


def _yaml(doc: Any) -> str:
    # JSON is valid YAML (1.2), and Grafana's provisioning reader accepts it; a header
    # comment says where the file comes from.
    return "# Generated by `fieldrig dashboards build`: edit cloud/src/fieldrig_cloud/" \
           "dashboards.py, not this file.\n" + json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def build(out: Path, influx_url: str = "http://127.0.0.1:8086") -> list[Path]:
    """Write every dashboard's JSON and the provisioning files under ``out``."""
    written = []
    (out / "provisioning" / "datasources").mkdir(parents=True, exist_ok=True)
    (out / "provisioning" / "dashboards").mkdir(parents=True, exist_ok=True)
    (out / "provisioning" / "alerting").mkdir(parents=True, exist_ok=True)
    for name, make in DASHBOARDS.items():
        p = out / f"{name}.json"
        p.write_text(json.dumps(dashboard_json(make()), indent=2, ensure_ascii=False) + "\n")
        written.append(p)
    files = {
        out / "provisioning" / "datasources" / "fieldrig.yaml": datasource_provisioning(
            influx_url),
        out / "provisioning" / "dashboards" / "fieldrig.yaml": dashboard_provider(),
        out / "provisioning" / "alerting" / "fieldrig.yaml": alert_provisioning(
            alert_rules_json()),
    }
    for p, doc in files.items():
        p.write_text(_yaml(doc))
        written.append(p)
    return written


# --- what Grafana does to a query before sending it (for tests and `fieldrig`) -----------

def render(query: str, variables: dict[str, str], start_ns: int, end_ns: int,
           interval: str = "10s") -> str:
    """Interpolate Grafana's InfluxQL macros and ``$var``s as Grafana does for a raw query:
    ``$timeFilter`` -> ``time >= {start}ms and time <= {end}ms``; a variable inside a
    regex (``/^$rig$/``) gets its value regex-escaped."""
    q = query.replace("$timeFilter",
                      f"time >= {start_ns // 1_000_000}ms and time <= {end_ns // 1_000_000}ms")
    q = q.replace("$__interval", interval)

    def in_regex(m: re.Match[str]) -> str:
        v = variables[m.group(1)]
        return "/^" + (v if v == ".*" else re.escape(v)) + "$/"

    q = re.sub(r"/\^\$(\w+)\$/", in_regex, q)
    return re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), q)


def all_panel_queries() -> dict[str, list[str]]:
    """Dashboard name -> the query names of its panels and annotations (from the JSON)."""
    by_text = {q.text: name for name, q in QUERIES.items()}
    out: dict[str, list[str]] = {}
    for name, make in DASHBOARDS.items():
        j = dashboard_json(make())
        names = [by_text[t["query"]] for p in j.get("panels", [])
                 for t in p.get("targets", [])]
        out[name] = names
    return out
