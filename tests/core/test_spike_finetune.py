"""Spike-aware fine-tuning: IF spikes forward, the clamp's straight-through gradient back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.encoders import DirectEncoder
from core.graph.patterns import trace
from core.graph.spiking import to_spiking
from core.methods import convert
from core.methods.cq import build_cq_network, spike_finetuned
from core.neurons import IFNeuron, neurons_of, set_steps
from core.pipeline import CQ_MODEL_FILES, run
from core.simulate import simulate
from core.spec import JobSpec, tuned_model_files
from core.train.spike_finetune import SurrogateIF, copy_parameters, spike_trainable
from tests.core.test_methods import CPU, context


def test_forward_is_the_if_neurons_spike_train():
    """Constant currents 0.3 and 0.5 per step, θ = 1: hand-computed spikes (u0 = 0)."""
    layer = SurrogateIF(IFNeuron(1.0, amplitude=2.0), window=5)
    current = torch.tensor([[0.3, 0.5]]).repeat(5, 1)  # [T·B, C] with B = 1
    spikes = layer(current).view(5, 2)
    # 0.3: u = .3 .6 .9 1.2→.2 .5  → fires at t = 4;  0.5: .5 1→0 .5 1→0 .5 → t = 2, 4
    assert spikes[:, 0].tolist() == [0, 0, 0, 2.0, 0]
    assert spikes[:, 1].tolist() == [0, 2.0, 0, 2.0, 0]


def test_backward_is_the_clamp_of_the_window_mean():
    """∂o[t]/∂c[t'] = (a/θ)/T inside 0 ≤ c̄ ≤ θ, zero outside; per-channel thresholds."""
    window, theta = 4, torch.tensor([1.0, 0.5, 1.0])
    layer = SurrogateIF(IFNeuron(theta, amplitude=torch.tensor([1.0, 1.0, 2.0])), window)
    means = torch.tensor([0.4, 0.7, -0.2])  # inside, above its θ = 0.5, below zero
    current = means.repeat(window, 1).requires_grad_(True)
    layer(current).sum().backward()
    expected = torch.tensor([1.0, 0.0, 0.0])  # Σ_t o[t] has d/dc[t'] = T · (a/θ)/T inside
    assert torch.allclose(current.grad, expected.repeat(window, 1))
    inside = torch.tensor([0.4, 0.3, 0.5]).repeat(window, 1).requires_grad_(True)
    layer(inside).sum().backward()
    assert torch.allclose(inside.grad, torch.tensor([1.0, 2.0, 2.0]).repeat(window, 1))


class _TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def test_the_trained_spiking_classifier_gives_its_weights_back_to_the_body():
    body = trace(_TwoLayer())
    classifier = spike_trainable(body, DirectEncoder(), 4, lambda _name: IFNeuron(0.5))
    images = torch.rand(8, 4)
    torch.nn.functional.cross_entropy(classifier(images), torch.arange(8) % 3).backward()
    trained = classifier.network
    assert trained.fc1.weight.grad.abs().sum() > 0 and body.fc1.weight.grad is None
    with torch.no_grad():
        trained.fc1.weight.sub_(trained.fc1.weight.grad)
    assert not torch.equal(body.fc1.weight, trained.fc1.weight)
    copy_parameters(trained, body)
    assert torch.equal(body.fc1.weight, trained.fc1.weight)
    # the classifier's output is the IF network's output current averaged over its 4 steps
    snn = to_spiking(body, lambda _n, _a: IFNeuron(0.5))
    set_steps(snn, 4)
    with torch.no_grad():
        expected = snn(images.repeat(4, 1)).view(4, 8, 3).mean(0)
        assert torch.allclose(classifier(images), expected)


def test_if_methods_train_their_own_copy_and_cq_asg_keeps_the_cq_network(
        digits_mlp, digits_arrays):
    ctx = context(digits_mlp, digits_arrays, methods=["cq-asg", "cq-if", "cq-ctt"], timesteps=4,
                  cq={"finetune_epochs": 1, "encoding": "vr", "spike_finetune_epochs": 1,
                      "ctt_batches": 4, "initial_membrane": 0.5})
    _, _, xe, ye = digits_arrays
    cq = build_cq_network(ctx)
    shared = {k: v.clone() for k, v in cq.body.state_dict().items()}
    body, record = spike_finetuned(ctx, cq, "cq-if")
    assert body is not cq.body and record["epochs"] == 1
    tuned = ctx.tuned_networks["cq-if"].state_dict()
    assert all(torch.equal(tuned[k], v) for k, v in body.state_dict().items())
    assert all(torch.equal(shared[k], v) for k, v in cq.body.state_dict().items())
    assert any(not torch.equal(shared[k], v) for k, v in body.state_dict().items())
    results = {method: simulate(convert(method, ctx), xe, ye, sample_shape=(1, 8, 8),
                                batch_size=250, device=CPU, memory_budget_mb=256)
               for method in ("cq-asg", "cq-if", "cq-ctt")}
    # cq-asg still converts the CQ ANN exactly; the IF methods are measured against it too
    assert results["cq-asg"].top1[-1] == pytest.approx(results["cq-asg"].reference_top1)
    assert results["cq-if"].reference_top1 == results["cq-asg"].reference_top1
    for method in ("cq-if", "cq-ctt"):
        parameters = results[method].parameters
        assert parameters["spike_finetune"]["epochs"] == 1
        assert parameters["initial_membrane"] == 0.5


def test_the_if_neurons_start_where_asked(digits_mlp, digits_arrays):
    ctx = context(digits_mlp, digits_arrays, methods=["cq-if"], timesteps=4,
                  cq={"finetune_epochs": 1, "encoding": "vr", "initial_membrane": 0.5})
    neurons = neurons_of(convert("cq-if", ctx).network)
    assert neurons and {n.initial_fraction for n in neurons.values()} == {0.5}


def test_no_spike_finetuning_is_the_papers_recipe(digits_mlp, digits_arrays):
    ctx = context(digits_mlp, digits_arrays, methods=["cq-if"], timesteps=4,
                  cq={"finetune_epochs": 1, "encoding": "vr"})
    cq = build_cq_network(ctx)
    assert spike_finetuned(ctx, cq, "cq-if") == (cq.body, None)
    assert "spike_finetune" not in convert("cq-if", ctx).parameters
    assert ctx.tuned_networks == {}


def test_the_tuned_network_is_exported_and_reuploaded_gives_the_same_snn(digits_onnx, tmp_path):
    """A user's ONNX upload → cq-if with spike-aware fine-tuning → cq-if-model.onnx; that file
    uploaded again (recognised as CQ, converted as it is) gives the same curve."""
    options = {"initial_membrane": 0.5}
    first = run(JobSpec(model_path=digits_onnx, dataset="digits", methods=["cq-if"],
                        timesteps=4, eval_samples=120, device="cpu",
                        cq={**options, "finetune_epochs": 1, "spike_finetune_epochs": 1,
                            "encoding": "vr"}), artifacts_dir=tmp_path)
    assert first.artifacts == [*CQ_MODEL_FILES, *tuned_model_files("cq-if")]
    again = run(JobSpec(model_path=tmp_path / "cq-if-model.onnx", dataset="digits",
                        methods=["cq-if"], eval_samples=120, device="cpu", cq=options))
    assert again.model.detected["cq"] and again.model.detected["T"] == 4
    assert again.methods[0].top1 == first.methods[0].top1
