"""core.sandbox: work on untrusted input runs in a child process under CPU, memory and
wall-clock limits, and its errors come back as snnconv errors.

The functions the child runs are defined here, at the top level (they are pickled by name);
this module imports nothing heavy at the top so that the child starts in well under a second.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from core import sandbox
from core.errors import InvalidSpec, ModelRejected, TooLarge
from core.sandbox import Limits

BOUND_S = 30  # generous: the development machine runs a benchmark on both cores meanwhile


def burn_cpu() -> None:
    while True:
        pass


def allocate(megabytes: int) -> int:
    blocks = [bytearray(1 << 20) for _ in range(megabytes)]
    return len(blocks)


def sleep_long() -> None:
    time.sleep(600)


def raise_error(kind: str) -> None:
    if kind == "too-large":
        raise TooLarge("declares 2 GiB", details={"declared_bytes": 2 << 30})
    if kind == "custom-code":
        raise ModelRejected("no such thing", code="custom-code")
    if kind == "invalid-spec":
        raise InvalidSpec("bad spec")
    raise ValueError("/srv/secret/path/model.onnx exploded")


def crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def environment() -> dict:
    return dict(os.environ)


def niceness() -> int:
    return os.nice(0)


def add(a: int, b: int) -> dict:
    return {"sum": a + b, "pid": os.getpid()}


@pytest.fixture(autouse=True, scope="module")
def _no_spares_left():
    yield
    sandbox.close_spares()


def _timed_refusal(function, *args, limits: Limits) -> tuple[ModelRejected, float]:
    began = time.monotonic()
    with pytest.raises(ModelRejected) as refused:
        sandbox.run(function, *args, limits=limits)
    return refused.value, time.monotonic() - began


def test_result_comes_back_from_another_process():
    result = sandbox.run(add, 2, 3)
    assert result["sum"] == 5 and result["pid"] != os.getpid()


def test_cpu_burner_is_stopped_at_its_cpu_limit():
    error, elapsed = _timed_refusal(burn_cpu, limits=Limits(cpu_seconds=1, timeout_s=120))
    assert error.code == "preflight-cpu-limit" and elapsed < BOUND_S
    assert str(error).startswith("pre-flight stopped: it used more than 1 s of CPU time "
                                 "(SNNCONV_PREFLIGHT_CPU_SECONDS)")


def test_allocation_over_the_memory_limit_is_refused():
    error, elapsed = _timed_refusal(allocate, 1024, limits=Limits(memory_mb=512))
    assert error.code == "preflight-memory-limit" and elapsed < BOUND_S
    assert "more than 512 MiB of memory (SNNCONV_PREFLIGHT_MEMORY_MB)" in str(error)
    assert sandbox.run(allocate, 64, limits=Limits(memory_mb=512)) == 64  # under it: fine


def test_a_child_that_sleeps_is_killed_at_the_wall_clock_limit():
    error, elapsed = _timed_refusal(sleep_long, limits=Limits(timeout_s=1))
    assert error.code == "preflight-timeout" and elapsed < BOUND_S
    assert "longer than 1 s (SNNCONV_PREFLIGHT_TIMEOUT_S)" in str(error)


@pytest.mark.parametrize(("kind", "cls", "code"), [
    ("too-large", TooLarge, "too-large"),
    ("custom-code", ModelRejected, "custom-code"),
    ("invalid-spec", InvalidSpec, "invalid-spec"),
])
def test_snnconv_errors_arrive_with_their_class_code_and_details(kind, cls, code):
    with pytest.raises(cls) as raised:
        sandbox.run(raise_error, kind)
    assert type(raised.value) is cls and raised.value.code == code
    expected = {"too-large": "declares 2 GiB", "custom-code": "no such thing",
                "invalid-spec": "bad spec"}[kind]
    assert str(raised.value) == expected
    if kind == "too-large":
        assert raised.value.details == {"declared_bytes": 2 << 30}


def test_other_errors_and_crashes_become_a_generic_refusal():
    error, _ = _timed_refusal(raise_error, "other", limits=Limits())
    assert error.code == "preflight-failed" and "ValueError" in str(error)
    assert "/srv" not in str(error) and "Traceback" not in str(error)
    error, _ = _timed_refusal(crash, limits=Limits())
    assert error.code == "preflight-failed" and "stopped unexpectedly" in str(error)


def test_a_memory_limit_below_the_start_up_size_is_a_server_error():
    with pytest.raises(RuntimeError, match="SNNCONV_PREFLIGHT_MEMORY_MB=1 is below"):
        sandbox.run(add, 1, 2, limits=Limits(memory_mb=1))


def test_child_sees_no_secrets_and_refuses_pickled_code(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2@db/snnconv")
    env = sandbox.run(environment)
    assert "DATABASE_URL" not in env and "hunter2" not in str(env)
    assert env["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] == "1" and env["OMP_NUM_THREADS"] == "1"


# ── the real pre-flight ───────────────────────────────────────────────────────────────────

def _small_onnx(path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("w1", (16, 8)), ("b1", (8,)), ("w2", (8, 3)), ("b2", (3,)))]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2")]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_inspect_untrusted_reports_what_the_in_process_inspect_does(tmp_path):
    from core import pipeline

    path = _small_onnx(tmp_path / "small.onnx")
    report = sandbox.inspect_untrusted(path, None, Limits())
    assert report == pipeline.inspect(path)
    assert report.convertible and report.spiking_layers == 1


def test_inspect_untrusted_passes_on_the_importers_refusal(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1 << 14, 1 << 14]), "pads")
    graph = helper.make_graph(
        [helper.make_node("Pad", ["x", "pads"], ["y"], name="pad")], "pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, None, None])], [pads])
    path = tmp_path / "pad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ModelRejected) as refused:
        sandbox.inspect_untrusted(path)
    assert refused.value.code == "activation-too-large" and "Pad (pad)" in str(refused.value)


def test_the_child_runs_at_the_lowest_priority():
    """Under load the serving process answers first; an upload's pre-flight waits."""
    assert sandbox.run(niceness) == max(os.nice(0), sandbox.CHILD_NICENESS)
