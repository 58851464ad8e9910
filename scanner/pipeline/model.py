"""Model stage: the checkpoint loaded lazily once per process, scoring batches of tensors."""

from __future__ import annotations

from collections.abc import Callable

import torch

from scanner.connect import SetupError
from scanner.detector.checkpoint import LoadedModel, load_model, read_checkpoint
from scanner.detector.faces import FaceFinder
from scanner.detector.networks import inference_forward, model_batch_size
from scanner.detector.views import ImageViews, ViewScores, score_flat_views, split_scores
from scanner.model_store import checkpoint_path
from scanner.pipeline.cpu_share import CoreShare
from scanner.settings import Settings, available_cores


def model_identity(settings: Settings) -> tuple[str, float]:
    """(model version, threshold) from the checkpoint, without building the network."""
    checkpoint = read_checkpoint(checkpoint_path(settings))
    return str(checkpoint["model_version"]), float(checkpoint["threshold"])


class ModelRunner:
    """Holds one loaded model per process; nothing touches torch or CUDA until first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loaded: LoadedModel | None = None
        self._forward: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._finder: FaceFinder | None = None
        self.share = CoreShare(available_cores()) if settings.torch_threads <= 0 else None

    @property
    def loaded(self) -> LoadedModel:
        """Load the checkpoint on first access (after any fork)."""
        if self._loaded is None:
            if self.settings.torch_threads > 0:
                torch.set_num_threads(self.settings.torch_threads)
            elif self.share is not None:  # torch counts the host's cores, not the quota's nor the other processes'
                torch.set_num_threads(self.share.threads())
            self._loaded = load_model(checkpoint_path(self.settings), self.settings.device)
            loaded = self._loaded
            size, precision = loaded.preprocess.decoding.size, loaded.preprocess.scoring.precision
            self._forward = inference_forward(loaded.model, size, loaded.device, precision, jit=self.settings.jit)
        return self._loaded

    @property
    def finder(self) -> FaceFinder | None:
        """The face finder for face-aware models (None for whole-image models)."""
        preprocess = self.loaded.preprocess
        if not preprocess.search.uses_faces:
            return None
        if self._finder is None:
            finder = FaceFinder(preprocess.search.faces)
            try:
                finder.check()
            except RuntimeError as exc:
                raise SetupError(f"{self.loaded.version}: {exc}") from exc
            self._finder = finder
        return self._finder

    def take_share(self) -> None:
        """On a CPU without SCANNER_TORCH_THREADS: score with this process's share of the host's cores now."""
        if self.share is None or self.loaded.device.type != "cpu":
            return
        if (threads := self.share.threads()) != torch.get_num_threads():
            torch.set_num_threads(threads)

    def close(self) -> None:
        """Give this process's cores back to the others scoring on the host."""
        if self.share is not None:
            self.share.leave()

    @torch.inference_mode()
    def score(self, images: list[ImageViews]) -> list[ViewScores]:
        """Score every view of every image in network calls of `model_batch` views; one ViewScores per image."""
        loaded = self.loaded
        forward = self._forward or loaded.model
        if not images:
            return []
        self.take_share()
        preprocess = loaded.preprocess
        views = torch.cat([image.tensors for image in images])
        counts = [len(image.tensors) for image in images]
        step = model_batch_size(loaded.device, self.settings.model_batch)
        flat = score_flat_views(forward, views, counts, preprocess, step, loaded.device)
        scores = split_scores(flat, counts, preprocess.search.image_views, preprocess.scoring.view_offsets)
        for result, image in zip(scores, images):
            result.boxes = image.boxes
        return scores
