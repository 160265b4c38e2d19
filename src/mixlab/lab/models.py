"""Models for the lab, by name; each adapts to the input's channels and size and to the class count.

``build_model(name, input_shape, num_classes)`` with ``input_shape`` ``(C, H, W)`` for images or
``(F,)`` for tabular data. Every model returns logits ``(B, num_classes)``; sigmoid outputs
(article 000) are applied by the loss (``--loss bce``), which is the numerically stable form.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MODELS", "build_model", "default_model"]


def _conv_bn(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FastCNN(nn.Module):
    """The default image model: three BatchNorm conv stages (pooling between), global pooling, linear.

    Small enough to train on a full 60,000-image Fashion-MNIST epoch in well under a minute on
    two CPU cores, and reaches ~90% test accuracy there in a few epochs.
    """

    def __init__(self, in_channels, num_classes, widths=(16, 32, 64)):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            _conv_bn(in_channels, w1), nn.MaxPool2d(2),     # (B, w1, H/2, W/2)
            _conv_bn(w1, w2), nn.MaxPool2d(2),              # (B, w2, H/4, W/4)
            _conv_bn(w2, w3), nn.AdaptiveMaxPool2d(1),      # (B, w3, 1, 1)
        )
        self.head = nn.Linear(w3, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class KerasCNN(nn.Module):
    """Article 002's Keras CNN, ported: conv16 5x5, pool, conv32 5x5, pool, dropout 0.2, GAP, dense128, dense.

    Initialised like Keras (Glorot-uniform weights, zero biases). Softmax lives in the loss.
    """

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, num_classes),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.net(x)


class Article000CNN(nn.Module):
    """Article 000's CNN: conv64, conv64, pool, conv128, conv128, pool (3x3, no padding), fc256, fc.

    The article ends in a sigmoid; here the logits are returned and ``--loss bce`` applies
    the sigmoid inside a stable binary cross-entropy.
    """

    def __init__(self, in_channels, num_classes, size):
        super().__init__()
        h, w = size
        side = lambda s: ((s - 4) // 2 - 4) // 2  # noqa: E731
        if side(h) < 1 or side(w) < 1:
            raise ValueError(f"article000-cnn needs images of at least 14x14 pixels, got {h}x{w}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3), nn.ReLU(), nn.Conv2d(128, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(128 * side(h) * side(w), 256)
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.features(x).flatten(1))))


def simple_cnn(in_channels, num_classes, widths=(16, 16)) -> nn.Sequential:
    """fastai v1's ``simple_cnn((C, 16, 16, n))``: 3x3 stride-2 convs each followed by ReLU, then pool+flatten."""
    chans = (in_channels,) + tuple(widths) + (num_classes,)
    layers = []
    for cin, cout in zip(chans[:-1], chans[1:]):
        layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


class PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = torch.relu(self.bn1(x))
        short = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + short


class PreActResNet18(nn.Module):
    """The mixup paper's PreAct ResNet-18 (He et al. 2016 identity mappings), for 32x32-like inputs."""

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [PreActBlock(cin, cout, stride), PreActBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        out = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def _torchvision_resnet(depth):
    def build(in_channels, num_classes, size):
        from torchvision import models  # lazy: only the lab needs torchvision

        net = getattr(models, f"resnet{depth}")(weights=None, num_classes=num_classes)  # never downloads
        if min(size) < 64:  # small images: 3x3 stride-1 stem and no max-pool, as for CIFAR
            net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        return net
    return build


class MLP(nn.Module):
    """Two hidden ReLU layers with dropout; flattens any input (tabular rows or images)."""

    def __init__(self, in_features, num_classes, hidden=256, dropout=0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.net(x)


def _image(builder):
    def build(input_shape, num_classes):
        if len(input_shape) != 3:
            raise ValueError(f"this model needs images (C, H, W), got input shape {tuple(input_shape)}; "
                             "use --model mlp for tabular data")
        return builder(input_shape[0], num_classes, tuple(input_shape[1:]))
    return build


MODELS = {
    "fast-cnn": _image(lambda c, n, s: FastCNN(c, n)),
    "keras-cnn": _image(lambda c, n, s: KerasCNN(c, n)),
    "article000-cnn": _image(lambda c, n, s: Article000CNN(c, n, s)),
    "simple-cnn": _image(lambda c, n, s: simple_cnn(c, n)),
    "preact-resnet18": _image(lambda c, n, s: PreActResNet18(c, n)),
    "resnet18": _image(_torchvision_resnet(18)),
    "resnet34": _image(_torchvision_resnet(34)),
    "mlp": lambda shape, n: MLP(math.prod(shape), n),
}


def default_model(kind: str) -> str:
    """The default model name for a dataset kind (``"image"`` or ``"tabular"``)."""
    return "mlp" if kind == "tabular" else "fast-cnn"


def build_model(name: str, input_shape, num_classes: int) -> nn.Module:
    """Build a registered model for ``input_shape`` ((C, H, W) or (F,)) and ``num_classes``.

    Initialisation draws from torch's global generator: seed it first for reproducible weights.
    """
    if name not in MODELS:
        raise ValueError(f"--model must be one of {sorted(MODELS)}, got {name!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return MODELS[name](tuple(input_shape), num_classes)
