"""POST /v1/models pre-flights the upload in a child process under limits: hostile ONNX files
that would take CPU-minutes, never finish, or allocate gigabytes are each answered quickly
with a 422 problem naming the limit, and nothing is stored.

The files are built here with ``onnx.helper``; each is a few bytes to a few hundred KiB.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from core import sandbox
from core.ingest.limits import MAX_GRAPH_NODES

CPU_SECONDS = 2
BOUND_S = 45  # per upload, child start-up included, on a 2-core machine running a benchmark


@pytest.fixture
def settings(settings):
    """The shared settings with a short CPU limit, so the CPU-bound case ends quickly."""
    return settings.model_copy(update={"preflight_cpu_seconds": CPU_SECONDS,
                                       "preflight_timeout_s": 60.0})


@pytest.fixture(autouse=True, scope="module")
def _no_spares_left():
    yield
    sandbox.close_spares()


def _model(nodes, x_shape, y_shape, inits=()) -> bytes:
    graph = helper.make_graph(
        nodes, "hostile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=8).SerializeToString()


def conv_chain(convs: int = 1000, side: int = 512) -> bytes:
    """1,000 3x3 convolutions on a 512x512 image: ~40 KB, over 25 CPU-seconds to run once."""
    weight = numpy_helper.from_array(np.full((1, 1, 3, 3), 0.1, np.float32), "w")
    names = ["x", *(f"v{i}" for i in range(1, convs)), "y"]
    nodes = [helper.make_node("Conv", [a, "w"], [b], pads=[1, 1, 1, 1])
             for a, b in zip(names, names[1:], strict=False)]
    return _model(nodes, ["N", 1, side, side], ["N", 1, side, side], [weight])


def many_nodes(count: int = MAX_GRAPH_NODES + 10_000) -> bytes:
    """A chain of 30,000 ReLUs (~700 KB): importing it would take minutes."""
    names = ["x", *(f"v{i}" for i in range(1, count)), "y"]
    nodes = [helper.make_node("Relu", [a], [b]) for a, b in zip(names, names[1:], strict=False)]
    return _model(nodes, ["N", 4], ["N", 4])


def pad_bomb(side: int = 1 << 14) -> bytes:
    """~170 bytes: one Pad whose output is a 1 GiB tensor per sample."""
    pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, side, side], np.int64), "p")
    return _model([helper.make_node("Pad", ["x", "p"], ["y"], name="pad")],
                  ["N", 1, 1, 1], ["N", 1, None, None], [pads])


def concat_bomb(doublings: int = 16) -> bytes:
    """~17 KB: a 16 KiB constant concatenated with itself 16 times folds to 1 GiB."""
    base = numpy_helper.from_array(np.zeros(4096, np.float32), "c0")
    nodes = [helper.make_node("Concat", [f"c{i}", f"c{i}"], [f"c{i + 1}"], axis=0,
                              name=f"double{i}") for i in range(doublings)]
    nodes += [helper.make_node("ReduceMean", [f"c{doublings}"], ["m"], keepdims=0),
              helper.make_node("Add", ["x", "m"], ["y"])]
    return _model(nodes, ["N", 1], ["N", 1], [base])


HOSTILE = {
    "conv-chain": (conv_chain, "preflight-cpu-limit",
                   f"more than {CPU_SECONDS} s of CPU time (SNNCONV_PREFLIGHT_CPU_SECONDS)"),
    "many-nodes": (many_nodes, "too-many-nodes", f"more than {MAX_GRAPH_NODES:,} nodes"),
    "pad-bomb": (pad_bomb, "activation-too-large", "over the 256.0 MiB limit on one "
                 "intermediate tensor"),
    "concat-bomb": (concat_bomb, "folding-too-large", "over the 512.0 MiB limit on constant "
                    "folding"),
}


def small_mlp() -> bytes:
    """A 16-8-3 ReLU MLP, the kind of file users upload (the digits export is tested in
    routes/test_models.py through the same route)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("w1", (16, 8)), ("b1", (8,)), ("w2", (8, 3)), ("b2", (3,)))]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2")]
    return _model(nodes, ["N", 16], ["N", 3], inits)


def _upload(client, payload: bytes):
    return client.post("/v1/models", files={"file": ("model.onnx", payload)})


def _timed_upload(client, payload: bytes):
    began = time.monotonic()
    response = _upload(client, payload)
    return response, time.monotonic() - began


def test_hostile_uploads_are_refused_quickly_naming_the_limit_and_block_nobody(
        client, assert_problem, stored_files):
    """All four at once (as an attacker would send them); meanwhile the API answers."""
    payloads = {name: build() for name, (build, _, _) in HOSTILE.items()}
    assert all(len(p) < 1024 * 1024 for p in payloads.values())  # the 1 MiB upload limit
    with ThreadPoolExecutor(len(payloads)) as pool:
        futures = {name: pool.submit(_timed_upload, client, p) for name, p in payloads.items()}
        latencies = []
        while not all(f.done() for f in futures.values()):
            began = time.monotonic()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - began)
            time.sleep(0.2)
    for name, future in futures.items():
        response, elapsed = future.result()
        _, code, limit = HOSTILE[name]
        body = assert_problem(response, 422, code)
        assert limit in body["detail"], (name, body["detail"])
        assert elapsed < BOUND_S, f"{name} took {elapsed:.1f} s"
    assert max(latencies) < 2.0, f"the API stalled for {max(latencies):.1f} s"
    assert stored_files() == []
    assert client.get("/v1/models").json()["count"] == 0


def test_a_normal_upload_is_still_checked_and_stored(client, stored_files):
    response = _upload(client, small_mlp())
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["preflight"]["convertible"] is True and model["input_shape"] == [16]
    assert model["preflight"]["spiking_layers"] == 1
    assert stored_files() == [f"uploads/{model['id']}/model.onnx"]
