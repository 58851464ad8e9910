"""PNG plots of a training run: loss and accuracy curves, confusion matrix, ROC curve."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from training.metrics import roc_curve  # noqa: E402


def plot_curves(history: list[dict[str, float]], out_dir: Path) -> list[Path]:
    """The paper's Figures 2 and 3: train/val loss and accuracy per epoch."""
    epochs = [row["epoch"] for row in history]
    paths = []
    for metric in ("loss", "accuracy"):
        fig, axis = plt.subplots(figsize=(6, 4))
        axis.plot(epochs, [row[f"train_{metric}"] for row in history], label=f"train {metric}")
        axis.plot(epochs, [row[f"val_{metric}"] for row in history], label=f"val {metric}")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.legend()
        axis.grid(alpha=0.3)
        paths.append(_save(fig, out_dir / f"{metric}.png"))
    return paths


def plot_confusion(counts: dict[str, int], out_dir: Path) -> Path:
    """Confusion matrix with rows = true class, columns = predicted class."""
    matrix = [[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]]
    fig, axis = plt.subplots(figsize=(4, 4))
    axis.imshow(matrix, cmap="Blues")
    for row in range(2):
        for col in range(2):
            axis.text(col, row, str(matrix[row][col]), ha="center", va="center", fontsize=14)
    axis.set_xticks([0, 1], ["real", "fake"])
    axis.set_yticks([0, 1], ["real", "fake"])
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    return _save(fig, out_dir / "confusion.png")


def plot_roc(labels: Sequence[int], scores: Sequence[float], auc: float, out_dir: Path) -> Path:
    """ROC curve of the validation scores."""
    fpr, tpr = roc_curve(labels, scores)
    fig, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot(fpr, tpr, label=f"AUC = {auc:.3f}")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    axis.set_xlabel("false-positive rate")
    axis.set_ylabel("true-positive rate")
    axis.legend(loc="lower right")
    return _save(fig, out_dir / "roc.png")


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
