"""The Kubernetes manifests (``runtime_server/deploy/kubernetes/``) against the Kubernetes API schemas
(``kubernetes-validate``, offline, strict: unknown fields are errors). The InferenceService is checked in two
parts: the fields KServe adds (``KSERVE_PREDICTOR``, ``KSERVE_MODEL``: the v1beta1 API's component extension and
model spec, as far as this manifest uses them) by a schema of our own, and everything else of the predictor as
the Kubernetes PodSpec and Container it extends; the probes are on the KServe v2 health endpoints."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "runtime_server" / "deploy" / "kubernetes"
KUBERNETES = "1.33.0"


def _documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _containers(doc: dict) -> list[dict]:
    if doc["kind"] == "InferenceService":
        return [doc["spec"]["predictor"]["model"]]
    return doc["spec"]["template"]["spec"]["containers"] if doc["kind"] == "Deployment" else []


KSERVE_PREDICTOR = {
    "minReplicas": {"type": "integer", "minimum": 0},
    "maxReplicas": {"type": "integer", "minimum": 0},
    "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
    "scaleTarget": {"type": "integer", "minimum": 1},
}
"""What v1beta1's ComponentExtensionSpec adds to the predictor's PodSpec (the fields this manifest sets)."""
KSERVE_MODEL = {
    "modelFormat": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": False,
    },
    "protocolVersion": {"enum": ["v1", "v2", "grpc-v2"]},
    "runtime": {"type": "string"},
    "storageUri": {"type": "string", "pattern": "^(s3|gs|https?|pvc|hdfs|webhdfs|oci)://"},
}
"""What v1beta1's ModelSpec adds to the Container it extends."""


def inference_service_errors(doc: dict) -> list[str]:
    """Every problem of an InferenceService: its KServe fields against ``KSERVE_*``, the rest of its predictor
    as a strict Kubernetes PodSpec with the model as its container."""
    if (doc.get("apiVersion"), doc.get("kind")) != ("serving.kserve.io/v1beta1", "InferenceService"):
        return [f"not a v1beta1 InferenceService: {doc.get('apiVersion')} {doc.get('kind')}"]
    predictor = dict(doc["spec"]["predictor"])
    model = dict(predictor.pop("model"))
    errors = []
    for fields, part, where in ((KSERVE_PREDICTOR, predictor, ".spec.predictor"), (KSERVE_MODEL, model, ".spec.predictor.model")):
        for key, schema in fields.items():
            if key in part:
                errors += [f"{where}.{key}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(part.pop(key))]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": doc["metadata"],
        "spec": {**predictor, "containers": [{"name": "kserve-container", "image": "runtime", **model}]},
    }
    try:
        kubernetes_validate.validate(pod, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as exc:
        errors.append(f".spec.predictor (as a PodSpec): {exc}")
    return errors


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


def test_inference_service_is_valid() -> None:
    (doc,) = _documents("inferenceservice.yaml")
    assert inference_service_errors(doc) == []
    model = doc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "triton" and model["protocolVersion"] == "v2"


def test_inference_service_check_catches_a_wrong_field() -> None:
    (doc,) = _documents("inferenceservice.yaml")
    doc["spec"]["predictor"]["minReplicas"] = "two"
    assert any(e.startswith(".spec.predictor.minReplicas") for e in inference_service_errors(doc))
    (doc,) = _documents("inferenceservice.yaml")
    doc["spec"]["predictor"]["model"]["readinesProbe"] = {}
    errors = inference_service_errors(doc)
    assert len(errors) == 1 and "readinesProbe" in errors[0]


@pytest.mark.parametrize("name", ["deployment.yaml", "inferenceservice.yaml"])
def test_probes_are_on_the_v2_health_endpoints(name: str) -> None:
    containers = [c for d in _documents(name) for c in _containers(d)]
    assert containers
    for c in containers:
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
