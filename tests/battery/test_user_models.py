"""Every battery model, exported the ways users export, imports exactly and runs every method.

The oracles: onnxruntime for the import (max |Δ| ≤ 1e-4 on real digits), the trained torch
model for the ANN accuracy in the report, and for cq-asg the CQ ANN it was converted from (the
accumulate-then-spike SNN must reproduce it exactly at T).
"""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch

from core.datasets import load_dataset
from core.ingest import load_model
from core.pipeline import run
from core.spec import METHODS, JobSpec
from tests.battery.models import BATTERY, EXPORTS, accuracy, export
from tests.core.ingest_fixtures import onnxruntime_outputs

pytestmark = pytest.mark.slow
EVAL_SAMPLES = 60
TIMESTEPS = 4


def _digits():
    return load_dataset("digits")


@pytest.mark.parametrize("variant", list(EXPORTS))
@pytest.mark.parametrize("name", list(BATTERY))
def test_import_matches_onnxruntime(trained, tmp_path, name, variant):
    spec, model = BATTERY[name], trained(name)
    x = torch.from_numpy(_digits().test.x[:16])
    path = export(model, spec, x[:1], tmp_path / "m.onnx", variant)
    if variant == "default":
        assert (tmp_path / "m.onnx.data").exists()  # the plain export keeps weights beside it

    loaded = load_model(path)

    fixed = onnxruntime.InferenceSession(str(path)).get_inputs()[0].shape[0] == 1
    expected = onnxruntime_outputs(path, spec.layout(x).numpy(), 1 if fixed else None)
    with torch.no_grad():
        actual = loaded.module(spec.layout(x)).numpy()
    assert np.abs(actual - expected).max() <= 1e-4


# Each model goes through the pipeline twice: the plain default export and one other way,
# rotated so that every export variant reaches the pipeline.
_OTHER = [v for v in EXPORTS if v != "default"]
PIPELINE_CASES = [(name, variant) for index, name in enumerate(BATTERY)
                  for variant in ("default", _OTHER[index % len(_OTHER)])]


@pytest.mark.parametrize("name, variant", PIPELINE_CASES)
def test_every_method_produces_a_report(trained, tmp_path, name, variant):
    spec, model = BATTERY[name], trained(name)
    dataset = _digits()
    path = export(model, spec, torch.from_numpy(dataset.test.x[:1]), tmp_path / "m.onnx",
                  variant)

    report = run(JobSpec(model_path=path, dataset="digits", methods=list(METHODS),
                         timesteps=TIMESTEPS, eval_samples=EVAL_SAMPLES, calib_samples=64,
                         device="cpu", cq={"finetune_epochs": 1, "ctt_batches": 2}),
                 artifacts_dir=tmp_path)

    oracle = accuracy(model, spec, dataset.test.x[:EVAL_SAMPLES], dataset.test.y[:EVAL_SAMPLES])
    assert report.ann.top1 == pytest.approx(oracle, abs=1e-9)
    assert [m.method for m in report.methods] == list(METHODS)
    for result in report.methods:
        assert len(result.top1) == TIMESTEPS and all(0 <= a <= 1 for a in result.top1)
        assert result.sops[-1] > 0 and result.layers
    asg = next(m for m in report.methods if m.method == "cq-asg")
    assert asg.top1[-1] == pytest.approx(asg.reference_top1, abs=1e-9)
    assert asg.latency.end_to_end_steps % TIMESTEPS == 0 and not asg.latency.anytime
    assert (tmp_path / "cq-model.onnx").exists()
    assert report.model.detected == {"cq": False}
