"""Request bodies for Grafana's HTTP API (no Grafana here: the bodies are what we can
check; ``publish`` only sends them)."""

from __future__ import annotations

from fieldrig_cloud import dashboards, grafana


def test_datasource_payload_points_at_influx() -> None:
    ds = grafana.datasource_payload("https://influxdb.lab.invalid", "lab")
    assert ds == {"name": dashboards.DATASOURCE_NAME, "uid": dashboards.DATASOURCE_UID,
                  "type": "influxdb", "access": "proxy", "url": "https://influxdb.lab.invalid",
                  "jsonData": {"dbName": "lab", "httpMode": "POST", "timeInterval": "1s"},
                  "isDefault": True}


def test_dashboard_payloads_overwrite_by_uid_into_the_folder() -> None:
    bodies = grafana.dashboard_payloads()
    assert [b["dashboard"]["uid"] for b in bodies] == [
        "fieldrig-fleet", "fieldrig-rig", "fieldrig-eis", "fieldrig-ccd", "fieldrig-pipeline"]
    assert all(b["overwrite"] and b["folderUid"] == dashboards.FOLDER_UID for b in bodies)
    assert all("id" not in b["dashboard"] for b in bodies)  # uid decides, never a stale id


def test_alert_rule_payloads_are_api_rules() -> None:
    rules = grafana.alert_rule_payloads()
    for r in rules:
        assert set(r) >= {"uid", "title", "condition", "data", "folderUID", "ruleGroup",
                          "noDataState", "execErrState", "for", "orgID"}
        assert r["folderUID"] == dashboards.FOLDER_UID


def test_annotation_payloads_from_events() -> None:
    [a] = grafana.annotation_payloads([{"time": 5_000_000, "rig": "r", "event": "short",
                                        "severity": "alarm", "text": "short!"}])
    assert a["time"] == 5 and a["text"] == "short!" and "alarm" in a["tags"]
