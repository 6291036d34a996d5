"""deploy/: Kubernetes manifests valid against Kubernetes' schemas, and alert rules and dashboard using real metrics.

kubernetes-validate ships Kubernetes' JSON schemas (no network). KEDA's kinds are CRDs it does not know, so they
are checked against the part of KEDA's v2 CRD schema the manifests use (below), strictly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.prometheus import exposed_names
from workers import keys
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"

_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
_META = {"type": "object", "required": ["name"], "properties": {"name": _NAME, "namespace": _NAME}}
# From KEDA 2.x's keda.sh_scaledobjects / keda.sh_triggerauthentications CRDs (the fields callq uses).
KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"}, "metadata": _META,
            "spec": {
                "type": "object", "additionalProperties": False, "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                       "properties": {"name": _NAME, "kind": {"type": "string"},
                                                      "apiVersion": {"type": "string"}}},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "triggers": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"}, "name": {"type": "string"},
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                            "authenticationRef": {"type": "object", "required": ["name"],
                                                  "properties": {"name": _NAME, "kind": {"type": "string"}}},
                        }}},
                }},
        }},
    "TriggerAuthentication": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "TriggerAuthentication"},
            "metadata": _META,
            "spec": {"type": "object", "additionalProperties": False, "properties": {
                "secretTargetRef": {"type": "array", "items": {
                    "type": "object", "required": ["parameter", "name", "key"], "additionalProperties": False,
                    "properties": {"parameter": {"type": "string"}, "name": _NAME, "key": {"type": "string"}}}}}},
        }},
}
# The Redis scaler's metadata keys (KEDA docs, "Redis Lists" scaler).
REDIS_SCALER_KEYS = {"address", "addressFromEnv", "host", "port", "enableTLS", "databaseIndex", "listName",
                     "listLength", "activationListLength", "usernameFromEnv", "passwordFromEnv"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = [*kustomization["resources"], "secret.example.yaml"]
    return [(f, doc) for f in files for doc in _docs(K8S / f)]


def _by_kind(kind: str, name: str) -> dict[str, Any]:
    return next(doc for _, doc in _manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name)


def test_every_manifest_is_valid_for_kubernetes_or_keda() -> None:
    try:
        import jsonschema
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is not installed: pip install kubernetes-validate (bundles k8s schemas)")
    checked = set()
    for _, doc in _manifests():
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked.add(doc["kind"])
    assert {"Deployment", "Service", "Secret", "ConfigMap", "ScaledObject", "NetworkPolicy"} <= checked


def test_workers_scale_on_the_backlog_and_the_steps_queue_and_beat_is_exactly_one() -> None:
    scaled = _by_kind("ScaledObject", "callq-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == _by_kind("Deployment", "callq-worker")["metadata"]["name"]
    triggers = scaled["spec"]["triggers"]
    assert all(t["type"] == "redis" and set(t["metadata"]) <= REDIS_SCALER_KEYS for t in triggers)
    queue = _by_kind("ConfigMap", "callq-config")["data"]["CALLQ_QUEUE"]
    assert [t["metadata"]["listName"] for t in triggers] == [keys.FAIR_BACKLOG, keys.steps_queue(queue)]
    assert scaled["spec"]["minReplicaCount"] >= 1  # a worker must be alive for reconciliation and /readyz
    beat = _by_kind("Deployment", "callq-beat")["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"


def test_secrets_come_only_from_the_secret_and_every_setting_exists() -> None:
    config = _by_kind("ConfigMap", "callq-config")["data"]
    assert not [k for k in config if re.search("KEY|PASSWORD|TOKEN|CONNECTION_STRING|REDIS_URL", k)]
    secret = _by_kind("Secret", "callq-secrets")["stringData"]
    assert {"CALLQ_API_KEYS", "CALLQ_ACS_CONNECTION_STRING", "FLOWER_BASIC_AUTH", "CALLQ_REDIS_URL",
            "CALLQ_METRICS_TOKEN"} <= set(secret)
    settings_source = (ROOT / "workers" / "settings.py").read_text()
    for name in [*config, *secret]:
        assert not name.startswith("CALLQ_") or f'"{name}"' in settings_source, f"{name} is not a callq setting"
    Settings.from_env({**config, **{k: v for k, v in secret.items() if k.startswith("CALLQ_")},
                       "CALLQ_API_KEYS": "web:" + "x" * 24})
    for name in ("callq-api", "callq-worker", "callq-beat", "callq-flower"):
        sources = _by_kind("Deployment", name)["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"secretRef": {"name": "callq-secrets"}} in sources


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bcallq_[a-z_]+\b", text))


def test_alert_rules_are_well_formed_and_use_only_exposed_metrics() -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = [r for group in rules["groups"] for r in group["rules"]]
    assert len(alerts) >= 8
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert _metric_names(rule["expr"]) <= exposed_names(), rule["alert"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    api_job = next(j for j in config["scrape_configs"] if j["job_name"] == "callq-api")
    assert api_job["authorization"]["type"] == "Bearer"


def test_dashboard_queries_only_exposed_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "callq-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    used = set().union(*(_metric_names(e) for e in exprs))
    assert used <= exposed_names()
    assert {"callq_queue_depth", "callq_workers_alive", "callq_commands_accepted_total",
            "callq_acs_responses_total", "callq_callback_events_total"} <= used
