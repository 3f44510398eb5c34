"""Training loop for CQ fine-tuning and for training a zoo architecture from scratch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from core.errors import InvalidSpec
from core.inference import batched_logits

OptimizerName = Literal["adam", "sgd", "adadelta"]
LossName = Literal["ce", "mse"]

SHIFT_PIXELS = 2
NOISE_SIGMA = 0.01
PROGRESS_REPORTS_PER_EPOCH = 20


class ArraySplit(Protocol):
    """What fit/evaluate need from a dataset split (core.datasets.Split satisfies it)."""

    x: np.ndarray  # float32, N × C × H × W, values in [0, 1]
    y: np.ndarray  # int64 class indices, N


class EpochStats(BaseModel):
    epoch: int
    loss: float = Field(description="mean training loss over the epoch")
    accuracy: float = Field(description="top-1 on the (augmented) training batches, train mode")
    lr: float
    seconds: float


class FitResult(BaseModel):
    epochs: int = Field(description="epochs completed")
    final_loss: float
    train_accuracy: float
    seconds: float
    history: list[EpochStats]


def _optimizer(name: str, parameters, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9)
    if name == "adadelta":
        return torch.optim.Adadelta(parameters, lr=lr)
    raise InvalidSpec(f"unknown optimizer '{name}'; choose adam, sgd or adadelta")


def _loss(name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if name == "ce":
        return F.cross_entropy(logits, labels)
    if name == "mse":  # the paper's MNIST recipe: squared error against one-hot targets
        return F.mse_loss(logits, F.one_hot(labels, logits.shape[1]).to(logits.dtype))
    raise InvalidSpec(f"unknown loss '{name}'; choose ce or mse")


def shift_and_noise(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random integer shifts of up to ±2 px (zero fill) plus Gaussian noise σ = 0.01.

    Random numbers come from ``generator`` (CPU) so a seed fixes the augmentation.
    """
    batch, _, height, width = images.shape
    span = 2 * SHIFT_PIXELS + 1
    offsets = torch.randint(0, span, (2, batch), generator=generator).to(images.device)
    padded = F.pad(images, (SHIFT_PIXELS,) * 4)
    rows = offsets[0][:, None] + torch.arange(height, device=images.device)  # B × H
    cols = offsets[1][:, None] + torch.arange(width, device=images.device)  # B × W
    samples = torch.arange(batch, device=images.device)[:, None, None]
    shifted = padded[samples, :, rows[:, :, None], cols[:, None, :]]  # B × H × W × C
    shifted = shifted.permute(0, 3, 1, 2)
    noise = torch.randn(shifted.shape, generator=generator).to(images.device)
    return (shifted + NOISE_SIGMA * noise).clamp(0.0, 1.0)


def _batches(
    count: int, batch_size: int, generator: torch.Generator | None
) -> Iterator[torch.Tensor]:
    order = torch.randperm(count, generator=generator) if generator else torch.arange(count)
    for start in range(0, count, batch_size):
        yield order[start : start + batch_size]


def _check_split(split: ArraySplit) -> None:
    if split.x.ndim < 2 or len(split.x) != len(split.y) or len(split.y) == 0:
        raise InvalidSpec(
            f"training data must be N samples with N labels, got x {split.x.shape} and "
            f"y {split.y.shape}"
        )


def fit(
    model: nn.Module,
    train: ArraySplit,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    optimizer: OptimizerName = "adam",
    lr_decay: float = 0.7,
    loss: LossName = "ce",
    augment: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Callable[[float, str], None] | None = None,
) -> FitResult:
    """Train ``model`` in place on ``train`` and return per-epoch statistics.

    The learning rate is multiplied by ``lr_decay`` after every epoch (the paper's ×0.7).
    ``augment`` adds random ±2 px shifts and Gaussian noise σ = 0.01 (see shift_and_noise).
    Deterministic for a given ``seed`` on CPU: shuffling and augmentation use their own
    generator, and the global torch RNG (dropout, initialisation of lazily created state) is
    seeded inside a forked RNG scope, so the caller's RNG state is left unchanged.
    ``progress(fraction, message)`` is called about 20 times per epoch; an exception it
    raises (the worker's JobCancelled) stops training there.  The model is left on
    ``device``, in eval mode.
    """
    _check_split(train)
    if epochs < 0 or batch_size < 1 or lr <= 0:
        raise InvalidSpec(
            f"need epochs ≥ 0, batch_size ≥ 1 and lr > 0, got {epochs}, {batch_size}, {lr}"
        )
    device = torch.device(device)
    history: list[EpochStats] = []
    started = time.perf_counter()
    with torch.random.fork_rng(devices=_rng_devices(device), device_type=device.type):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model.to(device)
        model.requires_grad_(True)  # imported weights arrive frozen, for inference only
        optim = _optimizer(optimizer, model.parameters(), lr)
        schedule = torch.optim.lr_scheduler.StepLR(optim, step_size=1, gamma=lr_decay)
        images = torch.from_numpy(np.ascontiguousarray(train.x, dtype=np.float32))
        labels = torch.from_numpy(np.ascontiguousarray(train.y, dtype=np.int64))
        for epoch in range(epochs):
            history.append(_epoch(model, optim, images, labels, epoch=epoch, epochs=epochs,
                                  batch_size=batch_size, loss=loss, augment=augment,
                                  generator=generator, device=device, progress=progress))
            schedule.step()
    model.eval()
    return FitResult(
        epochs=len(history),
        final_loss=history[-1].loss if history else float("nan"),
        train_accuracy=history[-1].accuracy if history else float("nan"),
        seconds=time.perf_counter() - started,
        history=history,
    )


def _rng_devices(device: torch.device) -> list[int]:
    """Accelerator indices whose RNG state fit forks (the CPU's is always forked)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epoch: int,
    epochs: int,
    batch_size: int,
    loss: str,
    augment: bool,
    generator: torch.Generator,
    device: torch.device,
    progress: Callable[[float, str], None] | None,
) -> EpochStats:
    """One pass over the training data in shuffled batches (epoch counts from 0)."""
    started = time.perf_counter()
    batches = -(-len(labels) // batch_size)
    report_every = max(1, batches // PROGRESS_REPORTS_PER_EPOCH)
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for index, batch in enumerate(_batches(len(labels), batch_size, generator)):
        if len(batch) < 2:
            continue  # BatchNorm cannot train on a single sample
        x = images[batch].to(device, non_blocking=True)
        y = labels[batch].to(device, non_blocking=True)
        if augment:
            x = shift_and_noise(x, generator)
        logits = model(x)
        batch_loss = _loss(loss, logits, y)
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        optimizer.step()
        loss_sum += batch_loss.item() * len(batch)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(batch)
        if progress is not None and (index + 1) % report_every == 0:
            progress(
                min((epoch + (index + 1) / batches) / epochs, 1.0),
                f"epoch {epoch + 1}/{epochs}, batch {index + 1}/{batches}, "
                f"loss {loss_sum / seen:.4f}",
            )
    return EpochStats(
        epoch=epoch + 1,
        loss=loss_sum / max(seen, 1),
        accuracy=correct / max(seen, 1),
        lr=optimizer.param_groups[0]["lr"],
        seconds=time.perf_counter() - started,
    )


def evaluate(
    model: nn.Module,
    split: ArraySplit,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> float:
    """Top-1 accuracy (a fraction) of ``model`` (moved to ``device``, eval mode) on ``split``."""
    _check_split(split)
    logits = batched_logits(model.to(device).eval(), split.x, batch_size, device)
    return float((logits.argmax(1) == torch.from_numpy(np.asarray(split.y))).float().mean())
