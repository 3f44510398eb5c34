"""User-style networks, trained briefly on `digits` and exported the ways users export them.

Each is the kind of model a researcher brings: written in plain PyTorch, trained by someone
else, exported by ``torch.onnx.export`` with whatever options they happened to use.  Inputs
are the 1×8×8 digits (NCHW) except ``nhwc``, which takes 8×8×1 and permutes it itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.datasets import load_dataset
from tests.core.ingest_fixtures import quiet_export

TRAIN_EPOCHS = 4


class LeNet5(nn.Module):
    """Two conv + max-pool stages, flattened with x.view(x.size(0), -1), two FC layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(16 * 2 * 2, 32), nn.Linear(32, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.view(x.size(0), -1))))


class VGGStyle(nn.Module):
    """Conv-BN-ReLU pairs, max pooling, dropout before the classifier."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(*block(1, 8), *block(8, 8), nn.MaxPool2d(2),
                                      *block(8, 16), nn.MaxPool2d(2), nn.Dropout(0.2))
        self.classifier = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNetStyle(nn.Module):
    """A stem, BasicBlocks with identity and 1×1 projection shortcuts, global average pool."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.layers = nn.Sequential(BasicBlock(width, width, 1),
                                    BasicBlock(width, 2 * width, 2),
                                    BasicBlock(2 * width, 2 * width, 1))
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2: 1×1 expand, depthwise 3×3, linear 1×1 projection, ReLU6, skip connection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 2) -> None:
        super().__init__()
        hidden = cin * expand
        self.skip = stride == 1 and cin == cout
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.body(x) if self.skip else self.body(x)


class MobileNetV2Style(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(8, 8, 1), InvertedResidual(8, 16, 2),
                                    InvertedResidual(16, 16, 1))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(x.mean((2, 3)))


class InceptionStyle(nn.Module):
    """Parallel 1×1, 3×3 and pooled branches concatenated on channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.b1 = nn.Conv2d(8, 4, 1)
        self.b3 = nn.Conv2d(8, 4, 3, padding=1)
        self.pool_proj = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(12 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        x = torch.cat([F.relu(self.b1(x)), F.relu(self.b3(x)),
                       F.relu(self.pool_proj(pooled))], 1)
        return self.fc(torch.flatten(F.avg_pool2d(x, 2), 1))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32),
                                 nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)


class LogSoftmaxNet(nn.Module):
    """Ends in log_softmax, as models trained with NLLLoss do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.fc = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x):
        return F.log_softmax(self.fc(torch.flatten(F.relu(self.conv(x)), 1)), dim=1)


class ChannelsLast(nn.Module):
    """Takes NHWC images and permutes them to NCHW itself."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = F.avg_pool2d(F.relu(self.conv(x.permute(0, 3, 1, 2))), 2)
        return self.fc(torch.flatten(x, 1))


class PaddedNet(nn.Module):
    """Pads with F.pad before an unpadded conv (ConstantOfShape chains in the legacy export)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = F.relu(self.conv1(F.pad(x, (1, 1, 1, 1))))
        x = F.relu(self.conv2(F.pad(x, (1, 1, 1, 1))))
        return self.fc(x.reshape(x.shape[0], -1))


@dataclass(frozen=True)
class UserModel:
    name: str
    build: Callable[[], nn.Module]
    channels_last: bool = False

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """Dataset samples (NCHW) in the layout this model takes."""
        return x.permute(0, 2, 3, 1).contiguous() if self.channels_last else x


BATTERY = {model.name: model for model in [
    UserModel("lenet5-maxpool", LeNet5), UserModel("vgg-bn-maxpool-dropout", VGGStyle),
    UserModel("resnet-style", ResNetStyle), UserModel("mobilenetv2-style", MobileNetV2Style),
    UserModel("inception-concat", InceptionStyle), UserModel("mlp", MLP),
    UserModel("log-softmax", LogSoftmaxNet), UserModel("nhwc-permute", ChannelsLast, True),
    UserModel("functional-pad", PaddedNet)]}


def train_briefly(spec: UserModel, epochs: int = TRAIN_EPOCHS, seed: int = 0) -> nn.Module:
    """A few epochs of Adam on digits: a real, imperfect model, as users bring."""
    torch.manual_seed(seed)
    model = spec.build()
    train = load_dataset("digits").train
    x, y = spec.layout(torch.from_numpy(train.x)), torch.from_numpy(train.y).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for first in range(0, len(y), 64):
            batch = order[first:first + 64]
            optimiser.zero_grad()
            logits = model(x[batch])
            loss = (F.nll_loss(logits, y[batch]) if isinstance(model, LogSoftmaxNet)
                    else F.cross_entropy(logits, y[batch]))
            loss.backward()
            optimiser.step()
    return model.eval()


def accuracy(model: nn.Module, spec: UserModel, x: np.ndarray, y: np.ndarray) -> float:
    """The trained model's own top-1 on NCHW samples: the oracle for the imported ANN."""
    with torch.no_grad():
        predicted = model(spec.layout(torch.from_numpy(x))).argmax(1).numpy()
    return float((predicted == y).mean())


# How users export: the plain default (dynamo, weights in m.onnx.data beside the graph),
# the legacy exporter at opsets 13 and 17, a fixed batch of 1 or a dynamic batch, and
# keep_initializers_as_inputs.
EXPORTS = {
    "default": {},
    "dynamo-dynamic": {"dynamo": True, "dynamic": True, "external_data": False},
    "legacy-13": {"dynamo": False, "opset_version": 13},
    "legacy-17-dynamic": {"dynamo": False, "opset_version": 17, "dynamic": True},
    "legacy-initializers-as-inputs": {"dynamo": False, "opset_version": 17,
                                      "keep_initializers_as_inputs": True},
}


def export(model: nn.Module, spec: UserModel, sample: torch.Tensor, path: Path,
           variant: str) -> Path:
    """Export with ``torch.onnx.export`` as a user would, options from EXPORTS[variant]."""
    options = dict(EXPORTS[variant])
    dynamic = options.pop("dynamic", False)
    if dynamic and options.get("dynamo"):
        options["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    elif dynamic:
        options |= {"input_names": ["x"], "dynamic_axes": {"x": {0: "n"}}}
    with quiet_export():
        torch.onnx.export(model, (spec.layout(sample),), str(path), **options)
    return path
