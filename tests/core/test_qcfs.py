"""qcfs: the QCFS activation by hand, its IF neuron's spike train, the rewrite, and a user's
export through the CLI, where a one-hidden-layer network's SNN must equal its QCFS ANN at
T = L (the hidden layer receives a constant current, so its spike count is exact)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import fx, nn

from core import cli, network_files, pipeline
from core.graph.canonicalize import recognise_activations
from core.graph.modules import ClampedReLU, CQActivation, QCFSActivation, qcfs_quantize
from core.methods import convert
from core.methods.qcfs import relu_form, resolve_qcfs_levels
from core.neurons import IFNeuron, reset_state, set_steps
from core.report import Report
from core.simulate import simulate
from core.spec import QCFS_PRESETS, JobSpec, QCFSOptions
from core.train import to_cq, to_qcfs
from tests.conftest import USER_EXPORTERS, export_trained_digits_mlp


def test_the_activation_by_hand():
    # λ = 1, L = 4: floor(clamp(z, 0, 1)·4 + ½)/4
    z = torch.tensor([-0.5, 0.1, 0.13, 0.4, 0.9, 2.0])
    expected = [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
    assert QCFSActivation(4, 1.0)(z).tolist() == pytest.approx(expected)
    with torch.no_grad():
        assert QCFSActivation(4, 1.0)(z).tolist() == pytest.approx(expected)
    # λ = 2 scales the levels: 0.13 → floor(0.26 + ½)/4·2 = 0; 0.4 → floor(1.3)/4·2 = 0.5
    assert qcfs_quantize(z, torch.tensor(2.0), 4).tolist() == pytest.approx(
        [0.0, 0.0, 0.0, 0.5, 1.0, 2.0])


def test_the_straight_through_gradients():
    activation = QCFSActivation(4, 1.0)
    z = torch.tensor([-0.5, 0.3, 0.6, 1.5], requires_grad=True)
    activation(z).sum().backward()
    assert z.grad.tolist() == pytest.approx([0.0, 1.0, 1.0, 0.0])
    # ∂a/∂λ: 1 where clipped at λ, a/λ − z/λ inside, 0 below zero: 0 + (.25 − .3) + (.5 − .6) + 1
    assert activation.threshold.grad.item() == pytest.approx(0.85, abs=1e-6)


def _spike_train(neuron: IFNeuron, current: float, steps: int) -> list[float]:
    reset_state(neuron)
    set_steps(neuron, steps)
    with torch.no_grad():
        out = neuron(torch.full((steps, 1), current))
    return (out.flatten() / neuron.amplitude).tolist()


def test_the_if_neuron_with_half_threshold_start_by_hand():
    # θ = a = 1, u(0) = ½, I = 0.3: u = .8, 1.1 → spike (.1), .4, .7: one spike at t = 2
    neuron = IFNeuron(1.0, amplitude=1.0, reset="subtract", initial_fraction=0.5)
    assert _spike_train(neuron, 0.3, 4) == [0.0, 1.0, 0.0, 0.0]
    assert qcfs_quantize(torch.tensor(0.3), torch.tensor(1.0), 4).item() == 0.25


@pytest.mark.parametrize("current", [0.0, 0.05, 0.2, 0.37, 0.5, 0.74, 0.99, 1.3])
def test_at_t_equal_l_the_count_is_the_activation(current):
    clip, levels = 0.8, 5
    neuron = IFNeuron(clip, amplitude=clip, reset="subtract", initial_fraction=0.5)
    rate = sum(_spike_train(neuron, current, levels)) * clip / levels
    assert rate == pytest.approx(
        qcfs_quantize(torch.tensor(current), torch.tensor(clip), levels).item(), abs=1e-6)


def _pooled_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(2, 2, 3, padding=1), nn.ReLU6(), nn.Flatten(),
                         nn.Linear(2 * 4 * 4, 3))


def test_the_rewrite_keeps_names_pools_and_bounds():
    start = recognise_activations(_pooled_net())
    names = [n for n, m in start.named_modules() if isinstance(m, ClampedReLU)]
    model = to_qcfs(start, 3, dict.fromkeys(names, 7.5))
    activations = {n: m for n, m in model.named_modules() if isinstance(m, QCFSActivation)}
    assert sorted(activations) == sorted(names)
    assert [m.clip_value() for _, m in sorted(activations.items())] == [7.5, 6.0]  # ReLU6
    assert all(m.levels == 3 for m in activations.values())
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert any(isinstance(m, nn.AvgPool2d) for m in model.modules())
    assert sum(p.numel() for n, p in model.named_parameters() if n.endswith("threshold")) == 2


def test_a_cq_upload_is_relaxed_to_its_clamps():
    cq = to_cq(fx.symbolic_trace(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))),
               0.8, 5)
    relaxed = relu_form(cq)
    assert not any(isinstance(m, CQActivation) for m in relaxed.modules())
    assert [m.clamp_max for m in relaxed.modules() if isinstance(m, ClampedReLU)] == [0.8]
    assert any(isinstance(m, CQActivation) for m in cq.modules())  # the upload is untouched


def test_default_levels_follow_t_up_to_eight():
    assert [resolve_qcfs_levels(t, None) for t in (1, 2, 4, 8, 32)] == [1, 2, 4, 8, 8]
    assert resolve_qcfs_levels(32, 3) == 3


def test_a_preset_fills_only_the_fields_the_job_leaves_out():
    assert QCFSOptions().schedule() == QCFS_PRESETS["fast"]
    thorough = QCFSOptions(preset="thorough", finetune_epochs=3, augment=False).schedule()
    assert (thorough.finetune_epochs, thorough.augment) == (3, False)
    assert thorough.spike_finetune_epochs == QCFS_PRESETS["thorough"].spike_finetune_epochs > 0
    assert thorough.lr_decay == QCFS_PRESETS["thorough"].lr_decay


@pytest.mark.parametrize("exporter", USER_EXPORTERS)
def test_a_users_export_converts_exactly_at_t_equal_l(capsys, tmp_path, exporter):
    path = export_trained_digits_mlp(tmp_path, exporter)
    out = tmp_path / "out"
    assert cli.main(["convert", str(path), "--quiet", "--dataset", "digits", "--method",
                     "qcfs,robust-norm", "--timesteps", "4", "--qcfs-levels", "4",
                     "--qcfs-finetune-epochs", "2", "--eval-samples", "300",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "qcfs" in printed
    report = Report.model_validate(json.loads((out / "report.json").read_text()))
    qcfs, robust = report.methods
    assert qcfs.parameters["L"] == 4 and qcfs.parameters["finetune"]["epochs"] == 2
    assert qcfs.parameters["preset"] == "fast" and qcfs.parameters["finetune"]["augment"] is False
    assert qcfs.latency.anytime and qcfs.latency.end_to_end_steps == 4
    # one hidden layer on a constant current: the SNN at T = L is its QCFS ANN, sample by sample
    assert qcfs.agreement[-1] == 1.0
    assert qcfs.top1[-1] == pytest.approx(qcfs.reference_top1)
    assert qcfs.reference_top1 > 0.85
    assert qcfs.top1[-1] > robust.top1[-1]  # robust-norm at T = 4 is still far from its ANN


def test_spike_aware_fine_tuning_trains_the_converted_weights(capsys, tmp_path):
    path = export_trained_digits_mlp(tmp_path, "default")
    reports = {}
    for epochs in (0, 2):
        out = tmp_path / f"out-{epochs}"
        assert cli.main(["convert", str(path), "--quiet", "--dataset", "digits", "--method",
                         "qcfs", "--timesteps", "2", "--qcfs-finetune-epochs", "1",
                         "--qcfs-spike-finetune-epochs", str(epochs), "--eval-samples", "300",
                         "--out", str(out)]) == 0
        reports[epochs] = Report.model_validate(json.loads((out / "report.json").read_text()))
    capsys.readouterr()
    plain, tuned = reports[0].methods[0], reports[2].methods[0]
    assert "spike_finetune" not in plain.parameters["finetune"]
    assert tuned.parameters["finetune"]["spike_finetune"]["epochs"] == 2
    assert tuned.parameters["clips"] == plain.parameters["clips"]  # θ = λ stays fixed
    assert tuned.top1 != plain.top1  # other weights, so another network
    assert tuned.agreement[-1] == 1.0  # still exact at T = L: one hidden layer


def test_a_stored_qcfs_network_simulates_like_the_original(digits_onnx, tmp_path):
    # shards share converted networks as JSON + safetensors: the QCFS reference included
    spec = JobSpec(model_path=digits_onnx, dataset="digits", methods=["qcfs"], timesteps=3,
                   eval_samples=100, calib_samples=100, batch_size=50, device="cpu",
                   qcfs={"finetune_epochs": 1})
    job = pipeline.prepare(spec)
    snn = convert("qcfs", job.ctx)
    network_files.save_network(snn, tmp_path, "net")
    loaded = network_files.load_network(tmp_path, "net")
    options = dict(sample_shape=job.dataset.input_shape, batch_size=50,
                   device=torch.device("cpu"), memory_budget_mb=256)
    x, y = job.evaluation.x, job.evaluation.y
    ours, theirs = simulate(loaded, x, y, **options), simulate(snn, x, y, **options)
    assert (ours.top1, ours.agreement, ours.reference_top1) == (
        theirs.top1, theirs.agreement, theirs.reference_top1)
    clips = [m.clip_value() for m in loaded.reference.modules() if isinstance(m, QCFSActivation)]
    assert clips == pytest.approx(list(snn.parameters["clips"].values()), abs=1e-4)
