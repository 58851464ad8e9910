"""Model stage: the checkpoint loaded lazily once per process, scoring batches of tensors."""

from __future__ import annotations

import torch

from scanner.settings import Settings
from training.checkpoint import LoadedModel, load_model, read_checkpoint
from training.models import predict_scores


def model_identity(settings: Settings) -> tuple[str, float]:
    """(model version, threshold) from the checkpoint, without building the network."""
    checkpoint = read_checkpoint(settings.model_path)
    return str(checkpoint["model_version"]), float(checkpoint["threshold"])


class ModelRunner:
    """Holds one loaded model per process; nothing touches torch or CUDA until first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loaded: LoadedModel | None = None

    @property
    def loaded(self) -> LoadedModel:
        """Load the checkpoint on first access (after any fork)."""
        if self._loaded is None:
            if self.settings.torch_threads > 0:
                torch.set_num_threads(self.settings.torch_threads)
            self._loaded = load_model(self.settings.model_path, self.settings.device)
        return self._loaded

    @torch.inference_mode()
    def score(self, tensors: list[torch.Tensor]) -> list[float]:
        """Fake-class probabilities for preprocessed images, in batches of `batch_size`."""
        loaded = self.loaded
        scores: list[float] = []
        step = max(1, self.settings.batch_size)
        for start in range(0, len(tensors), step):
            batch = torch.stack(tensors[start : start + step]).to(loaded.device, non_blocking=True)
            scores.extend(predict_scores(loaded.model, batch).float().cpu().tolist())
        return scores
