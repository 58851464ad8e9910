"""Model stage: the checkpoint loaded lazily once per process, scoring batches of tensors."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch

from scanner.connect import SetupError
from scanner.settings import Settings
from training.checkpoint import LoadedModel, load_model, read_checkpoint
from training.faces import FaceFinder
from training.models import predict_scores
from training.views import ImageViews, ViewScores, mirror_mask, split_scores


def model_identity(settings: Settings) -> tuple[str, float]:
    """(model version, threshold) from the checkpoint, without building the network."""
    checkpoint = read_checkpoint(settings.model_path)
    return str(checkpoint["model_version"]), float(checkpoint["threshold"])


class ModelRunner:
    """Holds one loaded model per process; nothing touches torch or CUDA until first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loaded: LoadedModel | None = None
        self._forward: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._finder: FaceFinder | None = None

    @property
    def loaded(self) -> LoadedModel:
        """Load the checkpoint on first access (after any fork)."""
        if self._loaded is None:
            if self.settings.torch_threads > 0:
                torch.set_num_threads(self.settings.torch_threads)
            self._loaded = load_model(self.settings.model_path, self.settings.device)
            self._forward = optimized_forward(self._loaded) if self.settings.jit else self._loaded.model
        return self._loaded

    @property
    def finder(self) -> FaceFinder | None:
        """The face finder for face-aware models (None for whole-image models)."""
        preprocess = self.loaded.preprocess
        if not preprocess.uses_faces:
            return None
        if self._finder is None:
            finder = FaceFinder(preprocess.faces)
            try:
                finder.check()
            except RuntimeError as exc:
                raise SetupError(f"{self.loaded.version}: {exc}") from exc
            self._finder = finder
        return self._finder

    @torch.inference_mode()
    def score(self, images: list[ImageViews]) -> list[ViewScores]:
        """Score every view of every image in model batches of `batch_size` views; one ViewScores per image."""
        loaded = self.loaded
        forward = self._forward or loaded.model
        if not images:
            return []
        preprocess = loaded.preprocess
        views = torch.cat([image.tensors for image in images])
        counts = [len(image.tensors) for image in images]
        mirror = mirror_mask(counts, preprocess)
        flat: list[float] = []
        step = max(1, self.settings.batch_size)
        for start in range(0, len(views), step):
            batch = views[start : start + step].to(loaded.device, non_blocking=True)
            marked = mirror[start : start + step] if mirror is not None else None
            flat.extend(predict_scores(forward, batch, marked).float().cpu().tolist())
        scores = split_scores(flat, counts, preprocess.image_views, preprocess.view_offsets)
        for result, image in zip(scores, images):
            result.boxes = image.boxes
        return scores


def optimized_forward(loaded: LoadedModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """On CPU, a traced and frozen copy (BatchNorm folded into convolutions, oneDNN kernels): about 2x
    the eager throughput with the same scores. Elsewhere, or if tracing fails, the eager model."""
    if loaded.device.type != "cpu":
        return loaded.model
    size = loaded.preprocess.size
    channels_last = torch.channels_last  # NHWC: oneDNN's faster layout for depthwise convolutions (~15%)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript still runs; eager is the fallback
            example = torch.zeros(2, 3, size, size).contiguous(memory_format=channels_last)
            model = copy.deepcopy(loaded.model).to(memory_format=channels_last)  # type: ignore[call-overload]
            traced = torch.jit.trace(model, example)
            frozen = torch.jit.optimize_for_inference(traced)
    except Exception:  # noqa: BLE001 - an architecture that does not trace still runs eagerly
        return loaded.model
    return lambda batch: frozen(batch.contiguous(memory_format=channels_last))
