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

from core.errors import InvalidSpec, JobCancelled

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
    should_stop: Callable[[], bool] | None = None,
    input_transform: nn.Module | None = None,
) -> FitResult:
    """Train ``model`` in place on ``train`` and return per-epoch statistics.

    The learning rate is multiplied by ``lr_decay`` after every epoch (the paper's ×0.7).
    ``augment`` adds random ±2 px shifts and Gaussian noise σ = 0.01 (see shift_and_noise).
    ``input_transform`` (e.g. VREncode) is applied to each batch after augmentation.
    Deterministic for a given ``seed`` on CPU: shuffling and augmentation use their own
    generator, and the global torch RNG (dropout, initialisation of lazily created state) is
    seeded inside a forked RNG scope, so the caller's RNG state is left unchanged.
    ``progress(fraction, message)`` is called about 20 times per epoch; when ``should_stop()``
    returns True, JobCancelled is raised between batches.  The model is left on ``device``,
    in eval mode.
    """
    _check_split(train)
    if epochs < 0 or batch_size < 1 or lr <= 0:
        raise InvalidSpec(
            f"need epochs ≥ 0, batch_size ≥ 1 and lr > 0, got {epochs}, {batch_size}, {lr}"
        )
    device = torch.device(device)
    with torch.random.fork_rng(devices=_rng_devices(device), device_type=device.type):
        torch.manual_seed(seed)
        return _train(
            model,
            train,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer_name=optimizer,
            lr_decay=lr_decay,
            loss_name=loss,
            augment=augment,
            generator=torch.Generator().manual_seed(seed),
            device=device,
            progress=progress,
            should_stop=should_stop,
            input_transform=input_transform,
        )


def _rng_devices(device: torch.device) -> list[int]:
    """Accelerator indices whose RNG state fit forks (the CPU's is always forked)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _train(
    model: nn.Module,
    train: ArraySplit,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    optimizer_name: str,
    lr_decay: float,
    loss_name: str,
    augment: bool,
    generator: torch.Generator,
    device: torch.device,
    progress: Callable[[float, str], None] | None,
    should_stop: Callable[[], bool] | None,
    input_transform: nn.Module | None,
) -> FitResult:
    model.to(device)
    model.requires_grad_(True)  # imported weights arrive frozen, for inference only
    transform = input_transform.to(device) if input_transform is not None else nn.Identity()
    optimizer = _optimizer(optimizer_name, model.parameters(), lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=lr_decay)
    images_all = torch.from_numpy(np.ascontiguousarray(train.x, dtype=np.float32))
    labels_all = torch.from_numpy(np.ascontiguousarray(train.y, dtype=np.int64))
    batches_per_epoch = -(-len(labels_all) // batch_size)
    report_every = max(1, batches_per_epoch // PROGRESS_REPORTS_PER_EPOCH)
    history: list[EpochStats] = []
    started = time.perf_counter()
    for epoch in range(epochs):
        epoch_started = time.perf_counter()
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for index, batch in enumerate(_batches(len(labels_all), batch_size, generator)):
            if should_stop is not None and should_stop():
                raise JobCancelled(f"training stopped during epoch {epoch + 1} of {epochs}")
            if len(batch) < 2:
                continue  # BatchNorm cannot train on a single sample
            images = images_all[batch].to(device, non_blocking=True)
            labels = labels_all[batch].to(device, non_blocking=True)
            if augment:
                images = shift_and_noise(images, generator)
            logits = model(transform(images))
            batch_loss = _loss(loss_name, logits, labels)
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimizer.step()
            loss_sum += batch_loss.item() * len(batch)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(batch)
            if progress is not None and (index + 1) % report_every == 0:
                fraction = (epoch + (index + 1) / batches_per_epoch) / epochs
                progress(
                    min(fraction, 1.0),
                    f"epoch {epoch + 1}/{epochs}, batch {index + 1}/{batches_per_epoch}, "
                    f"loss {loss_sum / seen:.4f}",
                )
        history.append(
            EpochStats(
                epoch=epoch + 1,
                loss=loss_sum / max(seen, 1),
                accuracy=correct / max(seen, 1),
                lr=optimizer.param_groups[0]["lr"],
                seconds=time.perf_counter() - epoch_started,
            )
        )
        schedule.step()
    model.eval()
    return FitResult(
        epochs=len(history),
        final_loss=history[-1].loss if history else float("nan"),
        train_accuracy=history[-1].accuracy if history else float("nan"),
        seconds=time.perf_counter() - started,
        history=history,
    )


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: np.ndarray,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    input_transform: nn.Module | None = None,
) -> torch.Tensor:
    """Logits of ``model`` (eval mode) for a float32 N × C × H × W array, on the CPU."""
    device = torch.device(device)
    model.to(device).eval()
    transform = input_transform.to(device) if input_transform is not None else nn.Identity()
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    outputs = [
        model(transform(tensor[start : start + batch_size].to(device))).cpu()
        for start in range(0, len(tensor), batch_size)
    ]
    return torch.cat(outputs)


def evaluate(
    model: nn.Module,
    split: ArraySplit,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    input_transform: nn.Module | None = None,
) -> float:
    """Top-1 accuracy (a fraction) of ``model`` on ``split``."""
    _check_split(split)
    logits = predict_logits(model, split.x, batch_size, device, input_transform)
    return float((logits.argmax(1) == torch.from_numpy(np.asarray(split.y))).float().mean())
