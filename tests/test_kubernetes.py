"""The Kubernetes manifests (``runtime_server/deploy/kubernetes/``) against the Kubernetes API schemas
(``kubernetes-validate``, offline, strict: unknown fields are errors) and KServe's InferenceService CRD schema
(vendored, see ``schemas/README.md``); the probes are on the KServe v2 health endpoints."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "runtime_server" / "deploy" / "kubernetes"
KUBERNETES = "1.33.0"
ISVC_SCHEMA = DEPLOY / "schemas" / "serving.kserve.io_inferenceservices.v1beta1.json.gz"


def _documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _containers(doc: dict) -> list[dict]:
    if doc["kind"] == "InferenceService":
        return [doc["spec"]["predictor"]["model"]]
    return doc["spec"]["template"]["spec"]["containers"] if doc["kind"] == "Deployment" else []


def _isvc_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(gzip.decompress(ISVC_SCHEMA.read_bytes())))


def _unknown_fields(value: object, schema: dict, path: str = "") -> list[str]:
    """Fields the CRD's structural schema does not declare: what the API server's strict field validation
    (``kubectl apply --validate=strict``) refuses, and plain JSON Schema lets through."""
    if isinstance(value, dict) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        props = schema.get("properties")
        if props is None:
            extra = schema.get("additionalProperties")
            return [f for k, v in value.items() for f in _unknown_fields(v, extra, f"{path}.{k}")] if isinstance(extra, dict) else []
        out = [f"{path}.{k}" for k in value if k not in props]
        return out + [f for k, v in value.items() if k in props for f in _unknown_fields(v, props[k], f"{path}.{k}")]
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [f for i, v in enumerate(value) for f in _unknown_fields(v, schema["items"], f"{path}[{i}]")]
    return []


def test_kubernetes_kinds_are_valid() -> None:
    docs = _documents("deployment.yaml")
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_a_wrong_field_is_reported_with_its_path() -> None:
    doc = _documents("deployment.yaml")[0]
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError, match="replicas"):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_inference_service_fits_kserve_crd() -> None:
    (doc,) = _documents("inferenceservice.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    errors = [f"{list(e.path)}: {e.message}" for e in _isvc_validator().iter_errors(doc)]
    assert not errors, errors
    assert not _unknown_fields(doc, _isvc_validator().schema)
    model = doc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "triton" and model["protocolVersion"] == "v2"


def test_kserve_schema_catches_a_wrong_field() -> None:
    (doc,) = _documents("inferenceservice.yaml")
    doc["spec"]["predictor"]["minReplicas"] = "two"
    assert any(list(e.path)[-1] == "minReplicas" for e in _isvc_validator().iter_errors(doc))
    doc["spec"]["predictor"]["model"]["readinesProbe"] = {}
    assert _unknown_fields(doc, _isvc_validator().schema) == [".spec.predictor.model.readinesProbe"]


@pytest.mark.parametrize("name", ["deployment.yaml", "inferenceservice.yaml"])
def test_probes_are_on_the_v2_health_endpoints(name: str) -> None:
    containers = [c for d in _documents(name) for c in _containers(d)]
    assert containers
    for c in containers:
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
