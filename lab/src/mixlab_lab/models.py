"""Models for the lab, by name; each adapts to the input's channels and size and to the class count.

``build_model(name, input_shape, num_classes)`` with ``input_shape`` ``(C, H, W)`` for images or
``(F,)`` for tabular data; ``check_input(name, input_shape, num_classes)`` refuses, before any
training, inputs a model cannot take (each image model declares its smallest image side,
:func:`min_side`). Every model returns logits ``(B, num_classes)``; sigmoid outputs
(article 000) are applied by the loss (``--loss bce``), which is the numerically stable form.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MODELS", "build_model", "default_model", "check_input", "min_side"]


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
            raise ValueError(f"article000-cnn needs images of at least 16x16 pixels, got {h}x{w}")
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
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # a module (no weights) so class activation maps find the head
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        out = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(self.avgpool(out), 1))


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


# ---------------------------------------------------------------------------------------------
# CPU-sized fast models (issue 13, "Speed of the lab"): time-to-accuracy on 2 CPU cores.
# ---------------------------------------------------------------------------------------------

_TTA = ("none", "flip", "flip-translate")


class _TTAMixin:
    """Test-time augmentation in the EVAL-mode forward only (training forwards are untouched).

    ``tta="flip"`` averages the logits of the image and its mirror image (airbench's
    ``tta_level=1``); ``"flip-translate"`` also averages in the mirrored pair shifted by one
    pixel up-left and down-right (reflect padding; airbench's ``tta_level=2``, 3x the flip cost).
    """

    def _check_tta(self, tta):
        if tta not in _TTA:
            raise ValueError(f"tta must be one of {_TTA}, got {tta!r}")
        self.tta = tta

    def forward(self, x):
        if self.training or self.tta == "none":
            return self._forward(x)
        logits = 0.5 * (self._forward(x) + self._forward(x.flip(-1)))
        if self.tta == "flip":
            return logits
        H, W = x.shape[-2:]
        padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect") if min(H, W) > 1 else \
            nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
        shifted = [padded[..., :H, :W], padded[..., 2:H + 2, 2:W + 2]]
        trans = sum(0.5 * (self._forward(s) + self._forward(s.flip(-1))) for s in shifted) / len(shifted)
        return 0.5 * logits + 0.5 * trans


class _ScaledBiasBN(nn.BatchNorm2d):
    """airbench's BatchNorm: no trainable scale, a bias whose learning rate is ``bias_scale ** 2`` times the rest.

    airbench trains BatchNorm biases with a 64x learning rate (``bias_scaler``) and the same decay
    rate as the other weights; the lab has one lr for all parameters, so the bias is stored
    divided by ``bias_scale`` = 8 and multiplied back in the forward: an SGD step on the stored
    value moves the real bias 8 * 8 = 64 times as far, and coupled weight decay still shrinks
    it at the common rate ``lr * wd`` (exactly airbench's parameter groups).
    """

    def __init__(self, channels, momentum=0.6, eps=1e-12, bias_scale=8.0):
        super().__init__(channels, eps=eps, momentum=1 - momentum, affine=False)
        self.bias_scale = float(bias_scale)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        use_batch = self.training or self.running_mean is None
        return nn.functional.batch_norm(x, self.running_mean, self.running_var, None, self.bias * self.bias_scale,
                                        use_batch, self.momentum, self.eps)


def _dirac_conv(cin, cout, k=3):
    """3x3 'same' conv without bias; airbench initialises its first ``cin`` filters as identities."""
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:min(cin, cout)])
    return conv


class _ConvGroup(nn.Module):
    """airbench's conv group: conv, max-pool 2 (skipped on a 1-pixel map), BN, act, conv, BN, act."""

    def __init__(self, cin, cout, pool, act, bn_momentum):
        super().__init__()
        self.conv1 = _dirac_conv(cin, cout)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.norm1 = _ScaledBiasBN(cout, bn_momentum)
        self.conv2 = _dirac_conv(cout, cout)
        self.norm2 = _ScaledBiasBN(cout, bn_momentum)
        self.act = act()

    def forward(self, x):
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class AirbenchCPU(_TTAMixin, nn.Module):
    """airbench's network (Keller Jordan, github.com/KellerJordan/cifar10-airbench, ``lib_airbench93/94``), sized for CPUs.

    Design taken from airbench: a frozen 2x2 *whitening* convolution first (its ``2 * C * 4``
    filters are the +/- eigenvectors of the training patches' covariance scaled by
    1/sqrt(eigenvalue), so the next layers see decorrelated input) with a trainable bias
    (trained throughout; airbench freezes it after 3 epochs) and GELU; three conv groups (conv,
    max-pool, BN, GELU, conv, BN, GELU) of ``widths`` channels (airbench94 uses 64/256/256,
    airbench93 64/128/128, the class default; the registered ``airbench-cpu`` uses 32/64/64,
    about a quarter of airbench93's multiply-adds, which is what 2 CPU cores can train in minutes);
    BatchNorm with momentum 0.6, no scale and a 64x-learning-rate bias (see
    :class:`_ScaledBiasBN`); identity-initialised (Dirac) 3x3 convs; global max-pool; a linear
    head without bias whose logits are multiplied by 1/9. Optional flip / flip+translate test-time
    augmentation in the eval-mode forward (``tta``).

    What differs from airbench and why: it runs in float32 (no fp16 on a CPU; ``--autocast bf16``
    runs the forwards in bfloat16), and by default the whitening filters are computed from the
    FIRST TRAINING BATCH the model sees -- a buffer ``whitened`` records that it happened, so
    checkpoints and resumed runs keep the same filters; under DDP rank 0's filters are broadcast
    to every rank (with ``--mix`` the first batch is already mixed, so the two arms of a
    ``compare`` whiten from slightly different statistics). ``--init-batch N`` calls
    :meth:`init_from_data` before training on N un-augmented, unmixed training images chosen
    by the seed instead (airbench uses 5,000), the same for every arm. Activations and weights
    use the channels-last memory format (``channels_last=True``; about 10% faster on the 2-core
    EPYC here). airbench's lookahead of the weights is the lab's ``--ema 0.95 --ema-mode
    lookahead``. The whitening bias trains throughout (airbench freezes it after 3 epochs).
    Pools are skipped where the map is already 1 pixel, so 8x8 inputs (``digits``) work; inputs
    below 2x2 pixels are refused.

    The matching hyperparameters (airbench's, converted to the lab's mean-reduced loss and
    coupled weight decay, see docs/RESULTS.md): SGD (Nesterov) momentum 0.85, lr = 1.5 * B / 1024
    at batch B, weight decay 1.33e-3, label smoothing 0.2, one-cycle schedule, flip + crop.
    """

    def __init__(self, in_channels, num_classes, size, widths=(64, 128, 128), whiten_kernel=2, act="gelu",
                 bn_momentum=0.6, logit_scale=1 / 9, tta="none", channels_last=True):
        super().__init__()
        self._check_tta(tta)
        self.channels_last = bool(channels_last)
        h, w = size
        k = whiten_kernel
        if h < k or w < k:
            raise ValueError(f"airbench-style models need images of at least {k}x{k} pixels, got {h}x{w}")
        act_cls = {"gelu": nn.GELU, "relu": lambda: nn.ReLU(inplace=True)}[act]
        self.whiten = nn.Conv2d(in_channels, 2 * in_channels * k * k, k, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.register_buffer("whitened", torch.zeros((), dtype=torch.bool))
        self.act0 = act_cls()
        groups, cin, side = [], self.whiten.out_channels, min(h, w) - k + 1
        for cout in widths:
            groups.append(_ConvGroup(cin, cout, pool=side >= 2, act=act_cls, bn_momentum=bn_momentum))
            side = side // 2 if side >= 2 else side
            cin = cout
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(cin, num_classes, bias=False)
        self.logit_scale = float(logit_scale)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def init_whitening(self, x, eps=5e-4):
        """Set the whitening filters from the k x k patches of the (normalised) batch ``x`` (B, C, H, W)."""
        k = self.whiten.kernel_size[0]
        c = x.shape[1]
        patches = x.float().unfold(2, k, 1).unfold(3, k, 1).transpose(1, 3).reshape(-1, c * k * k)
        cov = patches.T @ patches / patches.shape[0]
        evals, evecs = torch.linalg.eigh(cov)                      # ascending
        evals, evecs = evals.flip(0), evecs.T.flip(0)              # rows: eigenvectors, largest first
        filters = (evecs / torch.sqrt(evals.clamp_min(0) + eps)[:, None]).reshape(c * k * k, c, k, k)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
        # Under DDP every rank whitens from its own shard's first batch, and DDP syncs this frozen
        # weight only at construction: take rank 0's filters everywhere (every rank gets here on its
        # first training forward).
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            torch.distributed.broadcast(self.whiten.weight.data, src=0)
        self.whitened.fill_(True)

    def init_from_data(self, x):
        """The lab's data-dependent initialisation hook (``--init-batch``): the whitening filters from the normalised,
        un-augmented training images ``x`` (B, C, H, W) (:meth:`init_whitening`)."""
        self.init_whitening(x)

    def _forward(self, x):
        if self.training and not bool(self.whitened):
            self.init_whitening(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.groups(self.act0(self.whiten(x)))
        return self.head(self.pool(x).flatten(1)) * self.logit_scale


class _Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c, c), _conv_bn(c, c))

    def forward(self, x):
        return x + self.body(x)


class ResNet9Narrow(_TTAMixin, nn.Module):
    """David Page's DAWNBench ResNet-9 ("How to train your ResNet", myrtle.ai, 2018), narrowed for CPUs.

    Page's layout: prep conv -> [conv, pool, +residual(conv, conv)] -> [conv, pool] ->
    [conv, pool, +residual(conv, conv)] -> global max-pool -> linear, logits x 0.125; 3x3 convs
    with BatchNorm and ReLU. His widths are 64/128/256/512; ``widths`` divides them (default by
    4: 16/32/64/128) so an epoch fits a CPU budget. Pools are skipped where the map is already
    1 pixel, so 8x8 inputs work. Optional flip / flip+translate TTA in the eval-mode forward.
    Page's recipe: SGD Nesterov momentum 0.9, batch 512, weight decay 5e-4 x 512, label smoothing
    0.2, one-cycle (linear) schedule, crop + flip (+ cutout).
    """

    def __init__(self, in_channels, num_classes, size, widths=(16, 32, 64, 128), tta="none", channels_last=True):
        super().__init__()
        self._check_tta(tta)
        self.channels_last = bool(channels_last)
        h, w = size
        side = min(h, w)
        w0, w1, w2, w3 = widths

        def pool():
            nonlocal side
            if side >= 2:
                side //= 2
                return nn.MaxPool2d(2)
            return nn.Identity()

        self.net = nn.Sequential(
            _conv_bn(in_channels, w0),
            _conv_bn(w0, w1), pool(), _Residual(w1),
            _conv_bn(w1, w2), pool(),
            _conv_bn(w2, w3), pool(), _Residual(w3),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(w3, num_classes, bias=False)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def _forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.net(x)) * 0.125


def _image(builder, min_side: int = 1):
    """An image model's builder; ``min_side``: the smallest image height and width it takes (pixels)."""
    def build(input_shape, num_classes):
        if len(input_shape) != 3:
            raise ValueError(f"this model needs images (C, H, W), got input shape {tuple(input_shape)}; "
                             "use --model mlp for tabular data")
        return builder(input_shape[0], num_classes, tuple(input_shape[1:]))
    build.min_side = min_side
    return build


# min_side: the pools and unpadded convolutions leave no pixel below it (tests/lab/test_lab_options.py checks
# that a forward pass works at the declared side and that one pixel less is refused).
MODELS = {
    "fast-cnn": _image(lambda c, n, s: FastCNN(c, n), min_side=4),            # two 2x2 max-pools
    "keras-cnn": _image(lambda c, n, s: KerasCNN(c, n), min_side=16),         # 5x5 conv, pool, 5x5 conv, pool
    "article000-cnn": _image(lambda c, n, s: Article000CNN(c, n, s), min_side=16),
    "simple-cnn": _image(lambda c, n, s: simple_cnn(c, n)),
    "preact-resnet18": _image(lambda c, n, s: PreActResNet18(c, n)),
    "resnet18": _image(_torchvision_resnet(18)),
    "resnet34": _image(_torchvision_resnet(34)),
    "mlp": lambda shape, n: MLP(math.prod(shape), n),
    # CPU-sized fast models (docs/RESULTS.md, "Time to accuracy on 2 CPU cores"); "-notta" without flip-TTA.
    "airbench-cpu": _image(lambda c, n, s: AirbenchCPU(c, n, s, widths=(32, 64, 64), tta="flip"), min_side=2),
    "airbench-cpu-notta": _image(lambda c, n, s: AirbenchCPU(c, n, s, widths=(32, 64, 64), tta="none"), min_side=2),
    "airbench-cpu-wide": _image(lambda c, n, s: AirbenchCPU(c, n, s, widths=(64, 128, 128), tta="flip"),
                                min_side=2),
    # airbench93's network (64/128/128) with its test-time augmentation (tta_level 2: flip and 1-pixel translations,
    # 6 forwards per test image); the cifar10-90 preset's model
    "airbench-cpu-wide-tta2": _image(lambda c, n, s: AirbenchCPU(c, n, s, widths=(64, 128, 128),
                                                                 tta="flip-translate"), min_side=2),
    "resnet9-narrow": _image(lambda c, n, s: ResNet9Narrow(c, n, s, tta="flip")),
}


def min_side(name: str):
    """The smallest image height and width model ``name`` takes, in pixels; ``None`` if it takes any input."""
    return getattr(MODELS[name], "min_side", None)


def check_input(name: str, input_shape, num_classes: int, *, data: str = "the data") -> None:
    """Refuse (``ValueError`` naming ``--model``, ``data`` and the input shape) inputs model ``name`` cannot take.

    Checks the model's declared image needs (:func:`min_side`: images, and their smallest side), then
    builds it and runs one eval-mode forward pass on a zero batch of two rows of ``input_shape`` (on
    the CPU, without gradients; torch's global generator is left as it was), which must give
    ``(2, num_classes)`` logits. Cheap next to an epoch: called before any training.
    """
    shape = tuple(int(d) for d in input_shape)
    if name not in MODELS:
        raise ValueError(f"--model must be one of {sorted(MODELS)}, got {name!r}")
    side = min_side(name)
    if side is not None:
        if len(shape) != 3:
            raise ValueError(f"--model {name} needs images (C, H, W), but {data} has rows of input shape {shape}; "
                             f"use --model mlp for tabular data")
        if min(shape[1:]) < side:
            fit = [m for m in MODELS if (min_side(m) or 1) <= min(shape[1:])]
            raise ValueError(f"--model {name} needs images of at least {side}x{side} pixels, but {data} has "
                             f"{shape[1]}x{shape[2]} (input shape {shape}); models that take them: {', '.join(fit)}")
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model = build_model(name, shape, num_classes).eval()
            out = model(torch.zeros((2,) + shape))
    except (RuntimeError, ValueError) as e:
        reason = " ".join(str(e).split())
        raise ValueError(f"--model {name} cannot take {data}'s inputs of shape {shape}: {reason}") from None
    if tuple(out.shape) != (2, num_classes):
        raise ValueError(f"--model {name} gives outputs of shape {tuple(out.shape[1:])} for {data}'s inputs of shape "
                         f"{shape}; expected ({num_classes},), one logit per class")


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
