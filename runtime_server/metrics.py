"""Prometheus metrics of one server instance (its own registry, so several servers can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    """Counters and histograms exported at ``/metrics``.

    - ``mantis_http_requests_total{route,status}``: every HTTP request, by route template and status code.
    - ``mantis_infer_requests_total{model}`` / ``mantis_infer_images_total{model}``: successful inferences.
    - ``mantis_errors_total{kind}``: refused or failed requests by kind (``bad_request``, ``codec``,
      ``table_mismatch``, ``model_mismatch``, ``timeout``, ``too_large``, ``not_found``, ``unauthorized``, ``unavailable``,
      ``disconnected``, ``backend``).
    - ``mantis_grpc_requests_total{method,code}``: every gRPC call (a stream counts once), by method and status.
    - ``mantis_stream_messages_total{protocol,status}``: messages answered on the gRPC stream (``grpc``) and
      the compact stream (``compact``), ``ok`` or the error kind.
    - ``mantis_batch_size``: images per batch run on the backend.
    - ``mantis_queue_seconds``: time an image waited in the batching queue.
    - ``mantis_compute_seconds``: backend time per batch; ``mantis_decode_seconds``: entropy decoding per
      request; ``mantis_request_seconds``: successful inference requests, from arrival to answer.
    """

    def __init__(self, max_batch_size: int) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter("mantis_http_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.infer_requests = Counter("mantis_infer_requests", "Successful inference requests", ["model"], registry=r)
        self.infer_images = Counter("mantis_infer_images", "Images answered by successful inference requests", ["model"], registry=r)
        self.grpc_requests = Counter("mantis_grpc_requests", "gRPC calls by method and status code", ["method", "code"], registry=r)
        self.stream_messages = Counter(
            "mantis_stream_messages", "Stream messages answered, by protocol and status", ["protocol", "status"], registry=r
        )
        self.errors = Counter("mantis_errors", "Refused or failed requests by kind", ["kind"], registry=r)
        buckets = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, max_batch_size} & set(range(1, max_batch_size + 1)))
        self.batch_size = Histogram("mantis_batch_size", "Images per backend batch", buckets=buckets, registry=r)
        self.queue_seconds = Histogram("mantis_queue_seconds", "Time in the batching queue", buckets=_LATENCY_BUCKETS, registry=r)
        self.compute_seconds = Histogram("mantis_compute_seconds", "Backend time per batch", buckets=_LATENCY_BUCKETS, registry=r)
        self.decode_seconds = Histogram("mantis_decode_seconds", "Entropy decoding per request", buckets=_LATENCY_BUCKETS, registry=r)
        self.request_seconds = Histogram("mantis_request_seconds", "Inference request latency", buckets=_LATENCY_BUCKETS, registry=r)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
