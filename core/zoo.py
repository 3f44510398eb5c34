"""Named reference architectures: plain ``torch.nn`` modules that ``torch.fx`` can trace.

Conventions every network here follows, because the converter relies on them:
- each activation is its own ``nn.ReLU`` module (a module is never called twice), so every
  spiking layer has a distinct name in the traced graph;
- no data-dependent Python control flow, and ``nn.Flatten`` instead of ``x.view(...)``;
- residual additions are written ``out = out + shortcut`` followed by a separate ReLU; an
  identity shortcut is an empty ``nn.Sequential`` so that it leaves no node in the graph;
- pooling layers have fixed kernels sized for the documented input (no adaptive pooling),
  so average pooling maps onto a fixed depthwise convolution.

Networks are returned in training mode, as torch constructs them; callers choose the mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from core.errors import InvalidSpec


@dataclass(frozen=True)
class ArchInfo:
    """What a zoo architecture expects and where it comes from."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    description: str
    source: str


def _conv_bn_relu(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0
) -> list[nn.Module]:
    """A bias-free convolution (BN supplies the bias), BatchNorm and its own ReLU."""
    return [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(),
    ]


def _linear_relu_chain(widths: list[int]) -> list[nn.Module]:
    """Linear layers through ``widths`` with a ReLU between consecutive ones, none at the end."""
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(widths, widths[1:], strict=False)):
        layers += [nn.ReLU()] if index else []
        layers.append(nn.Linear(fan_in, fan_out))
    return layers


def _mlp_digits(num_classes: int, in_channels: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(),
                         *_linear_relu_chain([in_channels * 8 * 8, 128, 64, num_classes]))


def _lenet5(num_classes: int, in_channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        *_linear_relu_chain([16 * 5 * 5, 120, 84, num_classes]),
    )


def _cnn_small(num_classes: int, in_channels: int) -> nn.Module:
    return nn.Sequential(
        *_conv_bn_relu(in_channels, 16, 3, padding=1),
        nn.AvgPool2d(2),
        *_conv_bn_relu(16, 32, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, num_classes),
    )


def _mnist_7conv(num_classes: int, in_channels: int) -> nn.Module:
    # Unpadded 3x3 convs and 4x4/s2/p1 downsampling: 28→26→24→12→10→8→4→2, so the
    # classifier sees 128·2·2 = 512 features, as in the paper's MNIST net.
    return nn.Sequential(
        *_conv_bn_relu(in_channels, 32, 3),
        *_conv_bn_relu(32, 32, 3),
        *_conv_bn_relu(32, 32, 4, stride=2, padding=1),
        *_conv_bn_relu(32, 64, 3),
        *_conv_bn_relu(64, 64, 3),
        *_conv_bn_relu(64, 64, 4, stride=2, padding=1),
        *_conv_bn_relu(64, 128, 3),
        nn.Flatten(),
        nn.Linear(128 * 2 * 2, num_classes),
    )


def _vgg_star(num_classes: int, in_channels: int) -> nn.Module:
    # 32→16→8→4 by pooling, the unpadded 1024-conv takes 4→2, the last pool 2→1.
    return nn.Sequential(
        *_conv_bn_relu(in_channels, 128, 3, padding=1),
        *_conv_bn_relu(128, 128, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Dropout2d(0.1),
        *_conv_bn_relu(128, 256, 3, padding=1),
        *_conv_bn_relu(256, 256, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Dropout2d(0.1),
        *_conv_bn_relu(256, 512, 3, padding=1),
        *_conv_bn_relu(512, 512, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Dropout2d(0.1),
        *_conv_bn_relu(512, 1024, 3, padding=0),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(1024, num_classes),
    )


_POOL = 0  # marks an average pooling layer in the width list
_VGG16_WIDTHS = (64, 64, _POOL, 128, 128, _POOL, 256, 256, 256, _POOL)
_VGG16_WIDTHS += (512, 512, 512, _POOL, 512, 512, 512, _POOL)


def _vgg16(num_classes: int, in_channels: int) -> nn.Module:
    layers: list[nn.Module] = []
    channels = in_channels
    for width in _VGG16_WIDTHS:
        if width == _POOL:
            layers.append(nn.AvgPool2d(2))
        else:
            layers.extend(_conv_bn_relu(channels, width, 3, padding=1))
            channels = width
    # Five poolings take 32x32 to 1x1: the head is a single linear layer.
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, num_classes))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, then ``out + shortcut`` and a separate ReLU.

    The shortcut is a 1x1 conv + BN when the shape changes (option B) and otherwise an
    empty ``nn.Sequential``, which traces to no node at all.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu2(out)


def _cifar_resnet(
    num_classes: int,
    in_channels: int,
    widths: Sequence[int],
    blocks_per_stage: int,
    final_pool: int,
) -> nn.Module:
    """CIFAR-style ResNet: 3x3 stem without max pooling, stride 2 at each later stage."""
    layers: list[nn.Module] = _conv_bn_relu(in_channels, widths[0], 3, padding=1)
    channels = widths[0]
    for stage, width in enumerate(widths):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(channels, width, stride))
            channels = width
    layers += [nn.AvgPool2d(final_pool), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def _resnet18(num_classes: int, in_channels: int) -> nn.Module:
    return _cifar_resnet(num_classes, in_channels, (64, 128, 256, 512), 2, final_pool=4)


def _resnet20(num_classes: int, in_channels: int) -> nn.Module:
    return _cifar_resnet(num_classes, in_channels, (16, 32, 64), 3, final_pool=8)


_Builder = Callable[[int, int], nn.Module]

_HE = "He et al., Deep Residual Learning for Image Recognition (2016)"
_YAN = "Yan, Zhou & Wong, Low Latency Conversion of ANN to Rate-encoded SNNs (TNNLS, 2211.08410)"

_CATALOGUE: tuple[tuple[_Builder, str, tuple[int, ...], str, str], ...] = (
    # builder, name, input shape, description, source; every architecture has 10 classes
    (_mlp_digits, 'mlp-digits', (1, 8, 8),
     "MLP 64-128-64-10 for scikit-learn's 8x8 digits",
     "snnconv (smallest end-to-end example)"),
    (_lenet5, 'lenet5', (1, 28, 28),
     'LeNet-5 with ReLU and max pooling (exercises the spiking max-pool)',
     "LeCun, Bottou, Bengio & Haffner, Proc. IEEE 86(11), 1998 (LeNet-5)"),
    (_cnn_small, 'cnn-small', (1, 28, 28),
     'two conv+BN+ReLU+avgpool stages, one linear layer; trains in seconds',
     "snnconv demo network"),
    (_mnist_7conv, 'mnist-7conv', (1, 28, 28),
     "the paper's MNIST net: 7 conv+BN+ReLU, no pooling, FC 512->10",
     _YAN),
    (_vgg_star, 'vgg-star', (3, 32, 32),
     "the paper's CIFAR VGG*: 128-128-256-256-512-512-1024, avg pooling",
     _YAN),
    (_vgg16, 'vgg16', (3, 32, 32),
     'VGG-16 for CIFAR: 13 conv+BN+ReLU, avg pooling, one linear layer',
     "Simonyan & Zisserman, Very Deep Convolutional Networks (2015)"),
    (_resnet18, 'resnet18', (3, 32, 32),
     'ResNet-18 for CIFAR: 3x3 stem, no max pool, BasicBlocks [2,2,2,2]',
     _HE),
    (_resnet20, 'resnet20', (3, 32, 32),
     "ResNet-20 for CIFAR: 3 stages x 3 BasicBlocks, 16/32/64 channels, "
     "1x1 conv shortcuts (option B)",
     _HE),
)

_ZOO: dict[str, tuple[ArchInfo, _Builder]] = {
    name: (ArchInfo(name=name, input_shape=shape, num_classes=10, description=text,
                    source=source), builder)
    for builder, name, shape, text, source in _CATALOGUE
}


def names() -> list[str]:
    """The names of all zoo architectures, in catalogue order."""
    return list(_ZOO)


def info(name: str) -> ArchInfo:
    """Describe architecture ``name``; raises ``InvalidSpec`` listing the known names."""
    try:
        return _ZOO[name][0]
    except KeyError:
        raise InvalidSpec(
            f"unknown architecture {name!r}; known architectures: {', '.join(_ZOO)}",
            details={"known": list(_ZOO)},
        ) from None


def build(name: str, num_classes: int | None = None, in_channels: int | None = None) -> nn.Module:
    """Construct a freshly initialised ``name`` network (in training mode).

    ``num_classes`` and ``in_channels`` default to the architecture's documented values;
    the spatial input size is fixed by the architecture (see ``info(name).input_shape``).
    """
    arch = info(name)
    classes = arch.num_classes if num_classes is None else num_classes
    channels = arch.input_shape[0] if in_channels is None else in_channels
    if classes < 1 or channels < 1:
        raise InvalidSpec(
            f"{name}: num_classes and in_channels must be positive (got {classes}, {channels})"
        )
    return _ZOO[name][1](classes, channels)
