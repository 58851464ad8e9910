"""The check set a shipped model carries for `scanner adapt`: view features of its own validation images.

Adapting changes only the network's head, so features computed once with the shipped network score any adapted
copy of it: half of the set is replayed while fitting (the base's strengths are not forgotten), the other half
checks that no source the base knows gets worse. Features are stored mirror-averaged for the kinds the model
mirrors (as a view scores inside the mirror band), in float16; no image is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

CHECKSET_FORMAT = "fauxscan-checkset/1"


@dataclass(frozen=True)
class CheckSet:
    """Per image: source, label (1 fake), view count and whether it is replayed (else kept to check); per view:
    features."""

    model_version: str
    sources: list[str]
    source: torch.Tensor
    label: torch.Tensor
    counts: torch.Tensor
    replay: torch.Tensor
    features: torch.Tensor

    def to_dict(self) -> dict[str, object]:
        """Plain tensors and lists for `torch.save` (read back with weights_only)."""
        return {
            "format": CHECKSET_FORMAT, "model_version": self.model_version, "sources": list(self.sources),
            "source": self.source, "label": self.label, "counts": self.counts, "replay": self.replay,
            "features": self.features.half(),
        }  # fmt: skip

    def part(self, replay: bool) -> CheckSet:
        """The replayed half, or the half kept to check."""
        return self.subset(self.replay == replay)

    def subset(self, keep: torch.Tensor) -> CheckSet:
        """The images marked in the boolean `keep` (one per image), with their views' features."""
        ends = torch.cumsum(self.counts, 0)
        rows = torch.cat([torch.arange(int(e - c), int(e)) for e, c, k in zip(ends, self.counts, keep) if k] or
                         [torch.zeros(0, dtype=torch.long)])  # fmt: skip
        return CheckSet(self.model_version, self.sources, self.source[keep], self.label[keep], self.counts[keep],
                        self.replay[keep], self.features[rows])  # fmt: skip


def checkset_path(model_version: str, folder: Path) -> Path:
    """Where the check set of a model version lives in `folder` (the shipped weights' folder, or beside a model)."""
    return folder / f"checkset-{model_version}.pt"


def read_checkset(path: Path) -> CheckSet:
    """Load a check set file (tensors only; refuses pickled code)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != CHECKSET_FORMAT:
        raise ValueError(f"{path} is not a fauxscan check set")
    return CheckSet(
        str(data["model_version"]), list(data["sources"]), data["source"], data["label"], data["counts"],
        data["replay"], data["features"].float(),
    )  # fmt: skip
