"""fit/evaluate: loss goes down, runs are reproducible, CQ fine-tuning keeps accuracy."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from core.errors import JobCancelled
from core.graph.modules import VREncode
from core.train.fit import evaluate, fit, shift_and_noise
from core.train.rewrite import to_cq


@dataclass(frozen=True)
class Split:
    """Local stand-in with the attributes of core.datasets.Split."""

    x: np.ndarray
    y: np.ndarray


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train faster on one thread, and far faster when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> tuple[Split, Split]:
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1400], order[1400:]
    return Split(x[train], y[train]), Split(x[test], y[test])


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def test_fit_reduces_loss_and_reports_progress(digits):
    train, _ = digits
    events = []
    result = fit(
        _mlp(), train, epochs=3, lr=1e-2, progress=lambda f, m: events.append((f, m)), seed=1
    )
    assert result.epochs == 3 and len(result.history) == 3
    assert result.history[-1].loss < result.history[0].loss / 2
    assert result.final_loss == result.history[-1].loss
    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert "epoch 3/3" in events[-1][1]
    # StepLR: ×0.7 after every epoch
    lrs = [epoch.lr for epoch in result.history]
    assert lrs == pytest.approx([1e-2, 7e-3, 4.9e-3])


def test_fit_is_deterministic_for_a_seed_and_leaves_global_rng_alone(digits):
    train, _ = digits
    state = torch.get_rng_state()
    models = [_mlp(), _mlp(), _mlp()]
    results = [
        fit(model, train, epochs=1, lr=1e-2, augment=True, seed=seed)
        for model, seed in zip(models, (5, 5, 6), strict=True)
    ]
    assert torch.equal(torch.get_rng_state(), state)
    first, second, other = (model.state_dict() for model in models)
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert results[0].final_loss == results[1].final_loss
    assert any(not torch.equal(first[key], other[key]) for key in first)


def test_mse_loss_and_other_optimizers_train(digits):
    train, test = digits
    for optimizer, lr in (("adadelta", 1.0), ("sgd", 0.05)):
        model = _mlp()
        result = fit(model, train, epochs=3, lr=lr, optimizer=optimizer, loss="mse", seed=0)
        assert result.history[-1].loss < result.history[0].loss
        assert evaluate(model, test) > 0.5


def test_progress_that_raises_cancels_between_batches(digits):
    train, _ = digits
    calls = []

    def stop_after_three(_fraction: float, _message: str) -> None:
        calls.append(1)
        if len(calls) > 3:
            raise JobCancelled("cancelled")  # what the worker's progress callback does

    with pytest.raises(JobCancelled):
        fit(_mlp(), train, epochs=2, lr=1e-3, progress=stop_after_three)
    assert len(calls) == 4


def test_shift_and_noise_is_a_small_shift_plus_small_noise():
    images = torch.rand(32, 2, 10, 10)
    out = shift_and_noise(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    used = set()
    for sample in range(len(images)):
        errors = {
            (dy, dx): (out[sample] - padded[sample, :, dy : dy + 10, dx : dx + 10]).abs().max()
            for dy in range(5)
            for dx in range(5)
        }
        best = min(errors, key=errors.get)
        assert errors[best] < 0.06  # noise σ = 0.01
        used.add(best)
    assert len(used) > 5  # shifts actually vary


def test_cq_fine_tuning_keeps_accuracy_on_digits(digits):
    train, test = digits
    relu = _mlp()
    fit(relu, train, epochs=10, lr=3e-3, seed=0)
    relu_accuracy = evaluate(relu, test)
    assert relu_accuracy >= 0.93

    levels, window = 5, 4  # m = T / L = 0.8
    encoder = VREncode(levels, window / levels)
    cq = to_cq(relu, window / levels, levels)
    coded = nn.Sequential(encoder, cq)
    fit(coded, train, epochs=4, lr=1e-3, seed=0)
    cq_accuracy = evaluate(coded, test)
    print(f"ReLU {relu_accuracy:.3f}, CQ T={window} L={levels}: {cq_accuracy:.3f}")
    assert cq_accuracy >= 0.90
    # the fine-tuned network really is quantised: hidden values are multiples of 1/L ≤ m
    hidden = []
    cq.get_submodule("2").register_forward_hook(lambda _m, _i, out: hidden.append(out * levels))
    evaluate(coded, test)
    counts = torch.cat(hidden)
    assert torch.allclose(counts, counts.round(), atol=1e-4) and counts.max() <= window
