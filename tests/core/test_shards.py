"""Sharded evaluation without Celery: slices merged equal one run over the whole split."""

from __future__ import annotations

import json

import pytest
import torch

from core import network_files, pipeline, shards
from core.methods import convert
from core.simulate import simulate
from core.spec import JobSpec


@pytest.fixture(scope="module")
def spec(digits_onnx) -> JobSpec:
    return JobSpec(model_path=digits_onnx, dataset="digits", methods=["robust-norm", "cq-asg"],
                   timesteps=4, eval_samples=200, calib_samples=100, batch_size=50,
                   device="cpu", cq={"finetune_epochs": 1})


def _exact(result):
    return result.top1, result.top5, result.agreement, result.reference_top1


def test_shard_bounds_hold_whole_batches():
    assert shards.shard_bounds(200, 50, 50) == [(0, 50), (50, 100), (100, 150), (150, 200)]
    assert shards.shard_bounds(130, 40, 30) == [(0, 60), (60, 120), (120, 130)]
    assert shards.shard_bounds(10, 0) == [(0, 10)]


def test_two_slices_merge_into_the_whole_run(spec):
    job = pipeline.prepare(spec)
    evaluation, shape = job.evaluation, job.dataset.input_shape
    options = dict(sample_shape=shape, batch_size=50, device=torch.device("cpu"),
                   memory_budget_mb=256)
    for method in spec.methods:
        torch.manual_seed(spec.seed)
        snn = convert(method, job.ctx)
        whole = simulate(snn, evaluation.x, evaluation.y, **options)
        parts = [shards.ShardResult(index=i, start=a, stop=b, methods=[shards.to_shard(
                     simulate(snn, evaluation.x[a:b], evaluation.y[a:b], **options), b - a)])
                 for i, (a, b) in enumerate([(100, 200), (0, 100)])]  # any order
        merged = shards.merge(parts)[0]
        assert _exact(merged) == _exact(whole)  # counts: bit-identical fractions
        assert [layer.name for layer in merged.layers] == [layer.name for layer in whole.layers]
        for ours, theirs in zip(merged.layers, whole.layers, strict=True):
            assert ours.firing_rate == pytest.approx(theirs.firing_rate, rel=1e-9)
            assert ours.silent_fraction == pytest.approx(theirs.silent_fraction, rel=1e-9)
        assert merged.sops == pytest.approx(whole.sops, rel=1e-9)


def test_gaps_and_overlaps_are_refused(spec):
    result = pipeline.run(spec.model_copy(update={"methods": ["robust-norm"],
                                                  "eval_samples": 50}))
    part = shards.to_shard(result.methods[0], 50)
    with pytest.raises(ValueError, match="tile"):
        shards.merge([shards.ShardResult(index=0, start=0, stop=50, methods=[part]),
                      shards.ShardResult(index=1, start=60, stop=110, methods=[part])])


def test_shared_networks_and_shards_give_the_unsharded_report(spec, tmp_path):
    direct = pipeline.run_into(spec, tmp_path / "direct")
    plan = pipeline.share_networks(spec, tmp_path / "sharded", shard_size=100)
    assert plan.bounds == [(0, 100), (100, 200)] and plan.samples == 200
    for index in reversed(range(len(plan.bounds))):
        pipeline.evaluate_shard(plan.directory, index)
    report = pipeline.merge_shards_into(tmp_path / "sharded")
    assert not plan.directory.exists()
    assert json.loads((tmp_path / "sharded" / "report.json").read_text())["methods"][0]["top1"] == (
        report.methods[0].top1)
    assert report.ann == direct.ann and report.dataset == direct.dataset
    assert report.artifacts == direct.artifacts == list(pipeline.CQ_MODEL_FILES)
    assert [m.method for m in report.methods] == spec.methods
    for ours, theirs in zip(report.methods, direct.methods, strict=True):
        assert _exact(ours) == _exact(theirs)
        assert ours.parameters == theirs.parameters or ours.method == "cq-asg"
        assert ours.sops == pytest.approx(theirs.sops, rel=1e-9)


def test_a_stored_network_simulates_like_the_original(spec, tmp_path):
    job = pipeline.prepare(spec)
    snn = convert("cq-asg", job.ctx)
    network_files.save_network(snn, tmp_path, "net")
    loaded = network_files.load_network(tmp_path, "net")
    assert loaded.network.code == snn.network.code
    options = dict(sample_shape=job.dataset.input_shape, batch_size=50,
                   device=torch.device("cpu"), memory_budget_mb=256)
    x, y = job.evaluation.x, job.evaluation.y
    assert simulate(loaded, x, y, **options).top1 == simulate(snn, x, y, **options).top1


def test_loading_refuses_classes_outside_torch_and_core(spec, tmp_path):
    job = pipeline.prepare(spec)
    network_files.save_network(convert("robust-norm", job.ctx), tmp_path, "net")
    path = tmp_path / "net.json"
    document = json.loads(path.read_text())
    document["network"]["children"]["node_linear"]["module"]["class"] = "os:system"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="refusing"):
        network_files.load_network(tmp_path, "net")
