"""The bundle's model on a real Triton Inference Server 2.51 (``nvidia-pytriton``'s ``tritonserver``, installed by
``runtime_server/triton_serving/install.py``): the repository ``export/triton_repository.py`` writes, served
to tritonclient over HTTP, gRPC unary and the gRPC stream, and to the edge runtime over ``http://`` and
``grpc://``; every answer equals serve.py's for the same held-out bitstreams; refusals are client errors
that name the problem; the repository's versions and its other server halves."""

from __future__ import annotations

import json
import queue
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from codec.bundle import load_bundle
from codec.wire import LABEL_INDEX_OUTPUT, requestable_outputs
from export.split import parse_args as split_args
from export.triton_repository import RepositoryError, RepositoryOptions, options_from, write_repository
from runtime_edge.client import EdgeRuntime
from runtime_edge.transport.grpc import GrpcClient
from runtime_edge.transport import KServeClient, ServerRejectedError
from runtime_edge.transport import RefusedError
from runtime_server.dataplane import ServerConfig
from runtime_server.http_frontend import BackgroundServer
from runtime_server.client_budget import ClientErrorLimits
from runtime_server.process import ServerStartError
from runtime_server.triton_serving.install import TritonInstallError, install
from runtime_server.triton_serving.process import TritonProcess
from training.data.synthetic import SyntheticMultiTask

IMAGES = 200
BATCH = 8
TOP_K = 2
MAX_BATCH = 16


@pytest.fixture(scope="module")
def triton_install():
    try:
        return install()
    except TritonInstallError as exc:
        pytest.skip(f"Triton Inference Server cannot be installed here: {exc}")


@pytest.fixture(scope="module")
def repository(onnx_bundle, triton_install, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repository"
    write_repository(onnx_bundle, out, RepositoryOptions(max_batch_size=MAX_BATCH, execution_env=str(triton_install.execution_env)))
    return out


@pytest.fixture(scope="module")
def triton(triton_install, repository, tmp_path_factory):
    with TritonProcess(triton_install, repository, tmp_path_factory.mktemp("triton_log") / "tritonserver.log") as server:
        yield server


@pytest.fixture(scope="module")
def model(onnx_bundle) -> str:
    return load_bundle(onnx_bundle).manifest.model_name


@pytest.fixture(scope="module")
def bitstreams(onnx_bundle) -> list[bytes]:
    """Held-out synthetic images through the bundle's edge client: real bitstreams."""
    edge = EdgeRuntime(onnx_bundle)
    h, _ = edge.bundle.manifest.preprocessing.input_size
    data = SyntheticMultiTask(IMAGES, image_size=int(h), seed=23, split="test")
    return [edge.encode(data.pil(i)).bitstream for i in range(IMAGES)]


@pytest.fixture(scope="module")
def reference(onnx_bundle, model, bitstreams) -> list[dict[str, np.ndarray]]:
    """serve.py's answers (every output, top_k 2) for the bitstreams in requests of 8."""
    config = ServerConfig(onnx_bundle, max_batch_size=MAX_BATCH, max_request_images=MAX_BATCH, client_errors=ClientErrorLimits(burst=0))
    with BackgroundServer(config) as srv, KServeClient(srv.url) as client:
        names = requestable_outputs(load_bundle(onnx_bundle).task_names)
        return [client.infer(model, bitstreams[i : i + BATCH], {"top_k": TOP_K}, names).outputs for i in range(0, IMAGES, BATCH)]


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], where: str) -> None:
    assert set(got) == set(want), f"{where}: outputs {sorted(got)} != {sorted(want)}"
    for name, expected in want.items():
        actual = got[name]
        assert actual.shape == expected.shape, f"{where}: {name} shape {actual.shape} != {expected.shape}"
        if name.startswith("logits_"):
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5, err_msg=f"{where}: {name}")
        else:
            assert actual.tolist() == expected.tolist(), f"{where}: {name} differs"


def _batches(bitstreams: list[bytes]) -> list[list[bytes]]:
    return [bitstreams[i : i + BATCH] for i in range(0, IMAGES, BATCH)]


def _tc_inputs(module, batch: list[bytes]) -> list:
    tensor = module.InferInput("bitstream", [len(batch)], "BYTES")
    tensor.set_data_from_numpy(np.array(batch, dtype=object))
    return [tensor]


def _tc_outputs(result, names: list[str]) -> dict[str, np.ndarray]:
    return {n: result.as_numpy(n) for n in names}


def test_tritonclient_http_answers_equal_serve_py(triton, model, bitstreams, reference) -> None:
    names = list(reference[0])
    client = thttp.InferenceServerClient(triton.url.split("://")[1])
    for k, batch in enumerate(_batches(bitstreams)):
        result = client.infer(
            model,
            _tc_inputs(thttp, batch),
            outputs=[thttp.InferRequestedOutput(n, binary_data=True) for n in names],
            parameters={"top_k": TOP_K},
        )
        _assert_same(_tc_outputs(result, names), reference[k], f"tritonclient HTTP request {k}")
    client.close()


def test_tritonclient_grpc_unary_and_stream_answers_equal_serve_py(triton, model, bitstreams, reference) -> None:
    names = list(reference[0])
    client = tgrpc.InferenceServerClient(triton.grpc_url.split("://")[1])
    outputs = [tgrpc.InferRequestedOutput(n) for n in names]
    for k, batch in enumerate(_batches(bitstreams)):
        result = client.infer(model, _tc_inputs(tgrpc, batch), outputs=outputs, parameters={"top_k": TOP_K})
        _assert_same(_tc_outputs(result, names), reference[k], f"tritonclient gRPC request {k}")
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for k, batch in enumerate(_batches(bitstreams)):
            client.async_stream_infer(model, _tc_inputs(tgrpc, batch), outputs=outputs, request_id=str(k), parameters={"top_k": TOP_K})
        got = {}
        for _ in reference:
            result, error = answers.get(timeout=60)
            assert error is None, error
            got[int(result.get_response().id)] = _tc_outputs(result, names)
    finally:
        client.stop_stream()
        client.close()
    for k, want in enumerate(reference):
        _assert_same(got[k], want, f"tritonclient gRPC stream request {k}")


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_edge_runtime_answers_equal_serve_py(scheme, triton, model, bitstreams, reference) -> None:
    names = list(reference[0])
    client = KServeClient(triton.url) if scheme == "http" else GrpcClient(triton.grpc_url)
    with client:
        for k, batch in enumerate(_batches(bitstreams)):
            _assert_same(client.infer(model, batch, {"top_k": TOP_K}, names).outputs, reference[k], f"edge runtime {scheme}:// request {k}")
        small = client.infer(model, bitstreams[:BATCH], outputs=[LABEL_INDEX_OUTPUT]).outputs
    assert list(small) == [LABEL_INDEX_OUTPUT]
    assert small[LABEL_INDEX_OUTPUT].tolist() == reference[0][LABEL_INDEX_OUTPUT][..., :1].tolist()


def _corrupt(bitstream: bytes) -> bytes:
    bad = bytearray(bitstream)
    bad[-1] ^= 0x5A
    return bytes(bad)


def _other_tables(bitstream: bytes) -> bytes:
    return bitstream[:2] + bytes([bitstream[2] ^ 0xFF, bitstream[3]]) + bitstream[4:]  # header bytes 2-3: table id


REFUSALS = [
    ("corrupt", lambda bs: [bs[0], _corrupt(bs[1])], {}, "codec: bitstream[1]: ChecksumError"),
    ("other tables", lambda bs: [_other_tables(bs[0])], {}, "table_mismatch: bitstream[0]: TableMismatchError"),
    ("over the limit", lambda bs: bs[: MAX_BATCH + 1], {}, f"too_large: request holds {MAX_BATCH + 1} bitstreams"),
    ("bad top_k", lambda bs: bs[:1], {"top_k": 0}, "bad_request: parameter 'top_k' must be an integer >= 1"),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_are_client_errors_that_name_the_problem(case, triton, model, bitstreams) -> None:
    _, make, params, message = case
    with KServeClient(triton.url) as http, pytest.raises(ServerRejectedError) as refused:
        http.infer(model, make(bitstreams), params)
    assert refused.value.status == 400 and message in refused.value.reason, refused.value
    with GrpcClient(triton.grpc_url, stream=False) as unary, pytest.raises(RefusedError) as refused_grpc:
        unary.infer(model, make(bitstreams), params)
    assert refused_grpc.value.code == "INVALID_ARGUMENT" and message in str(refused_grpc.value), refused_grpc.value


def test_a_refused_request_leaves_its_batch_mates_answered(triton, model, bitstreams, reference) -> None:
    def good(k: int) -> dict[str, np.ndarray]:
        with KServeClient(triton.url) as client:
            return client.infer(model, bitstreams[k * BATCH : (k + 1) * BATCH], {"top_k": TOP_K}, list(reference[0])).outputs

    def bad(_: int) -> str:
        with KServeClient(triton.url) as client:
            try:
                client.infer(model, [_corrupt(bitstreams[0])])
            except ServerRejectedError as exc:
                return exc.reason
        return "answered"

    with ThreadPoolExecutor(8) as pool:
        goods = [pool.submit(good, k) for k in range(6)]
        bads = [pool.submit(bad, k) for k in range(6)]
        for k, future in enumerate(goods):
            _assert_same(future.result(), reference[k], f"concurrent request {k}")
        assert all("ChecksumError" in f.result() for f in bads)


def test_metadata_names_the_bundle(triton, model, onnx_bundle) -> None:
    manifest = load_bundle(onnx_bundle).manifest
    client = thttp.InferenceServerClient(triton.url.split("://")[1])
    meta = client.get_model_metadata(model)
    assert meta["versions"] == ["1"] and [i["name"] for i in meta["inputs"]] == ["bitstream"]
    assert sorted(o["name"] for o in meta["outputs"]) == sorted(requestable_outputs(manifest.task_names))
    params = {k: v["string_value"] for k, v in client.get_model_config(model)["parameters"].items()}
    assert params["mantis_table_id"] == manifest.tables["table_id"] and params["mantis_tables_sha256"] == manifest.tables["sha256"]
    assert json.loads(params["mantis_bundle_versions"]) == manifest.versions
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("no_such_model")
    client.close()


def test_a_new_bundle_is_a_new_version(onnx_bundle, tmp_path) -> None:
    repo = tmp_path / "repo"
    assert write_repository(onnx_bundle, repo).version == 1
    assert write_repository(onnx_bundle, repo).version == 1  # the same bundle again: its version rewritten
    newer = tmp_path / "newer"
    shutil.copytree(onnx_bundle, newer)
    doc = json.loads((newer / "manifest.json").read_text())
    doc["versions"] = {"edge": 1, "server": 2}
    (newer / "manifest.json").write_text(json.dumps(doc))
    written = write_repository(newer, repo)
    assert written.version == 2
    config = (repo / written.model / "config.pbtxt").read_text()
    assert '\\"server\\": 2' in config
    assert sorted(p.name for p in (repo / f"{written.model}_decode").iterdir() if p.is_dir()) == ["1", "2"]


def test_production_server_halves(onnx_bundle, tmp_path) -> None:
    """``onnxruntime_onnx`` and ``tensorrt_plan`` configurations (Triton here has neither backend: see the docs)."""
    written = write_repository(onnx_bundle, tmp_path / "ort", RepositoryOptions(server_half="onnxruntime", instances=2, gpu=True))
    server = tmp_path / "ort" / f"{written.model}_server"
    config = (server / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 32" in config and "dynamic_batching" in config
    assert "count: 2 kind: KIND_GPU" in config
    assert (server / "1" / "model.onnx").read_bytes() == (onnx_bundle / "server.onnx").read_bytes()
    with pytest.raises(RepositoryError, match="no server.tensorrt entry"):
        write_repository(onnx_bundle, tmp_path / "trt", RepositoryOptions(server_half="tensorrt"))
    with pytest.raises(RepositoryError, match="no such directory"):
        write_repository(tmp_path / "missing", tmp_path / "x")


def test_split_takes_the_repository_options(tmp_path) -> None:
    args = split_args(
        [
            "--checkpoint",
            "c.safetensors",
            "--target",
            "onnx",
            "--out",
            str(tmp_path / "b"),
            "--triton-repository",
            str(tmp_path / "r"),
            "--triton-server-half",
            "onnxruntime",
            "--triton-max-batch-size",
            "8",
        ]
    )
    assert args.triton_repository == tmp_path / "r"
    assert options_from(args, "triton-") == RepositoryOptions(server_half="onnxruntime", max_batch_size=8)


def test_onnxruntime_repository_fails_only_for_the_missing_backend(onnx_bundle, triton_install, tmp_path) -> None:
    """The ``onnxruntime_onnx`` repository on the real Triton: its configurations parse and the Python
    models load; only the server half fails, because this Triton build has no ONNX Runtime backend."""
    written = write_repository(
        onnx_bundle, tmp_path / "repo", RepositoryOptions(server_half="onnxruntime", execution_env=str(triton_install.execution_env))
    )
    log = tmp_path / "tritonserver.log"
    with pytest.raises(ServerStartError):
        TritonProcess(triton_install, written.root, log).start()
    text = log.read_text()
    assert (
        f"failed to load '{written.model}_server' version 1: Invalid argument: unable to find backend library for backend 'onnxruntime'"
        in text
    )
    assert f"successfully loaded '{written.model}_decode'" in text and f"successfully loaded '{written.model}_answer'" in text
    assert "parse" not in text.lower()
