"""The detector's goal table (issue 9) on a checkpoint's validation split of the shared sets, with the
false-positive rate per real source and the AUC cost of JPEG q75 + half size, for one or more models.

    .venv/bin/python -m training.probes.report runs/v2.pt --compare fauxnet-fast --data ../shared/data

Every model is scored on the validation split of the FIRST model (so all columns use the same images).
Writes the raw numbers to --out (default: runs/NAME_report.json, NAME the first model's file name).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from scanner.detector.checkpoint import load_model, read_checkpoint
from scanner.registry import resolve_model
from training.data import Sample
from training.evaluate import degrader, score_samples, select_samples
from training.metrics import roc_auc

RUNS = Path(__file__).resolve().parents[2] / "runs"  # the repository's runs/, ignored by git

SETS = ("ciplab_real_and_fake_face", "hardfakevsrealfaces", "lfw_faceswap", "cifake", "ffhq_stylegan_256",
        "sdfd_sd21_ffhq", "real_scenes_people", "diffusion_people_multi")  # fmt: skip
# Pools across sets (a set a model did not train on is simply absent from its validation split)
HQ_REALS = (("ffhq_stylegan_256", 0), ("sdfd_sd21_ffhq", 0), ("celebahq_real", 0))
GAN_FAKES = (("ffhq_stylegan_256", 1), ("hardfakevsrealfaces", 1), ("generated_faces", 1))
DIFFUSION_FAKES = (("diffusion_people_multi", 1), ("sdfd_sd21_ffhq", 1))
PEOPLE_REALS = (("real_scenes_people", 0), ("unsplash_people_real", 0), *HQ_REALS)


def sets_of(model: Path) -> tuple[str, ...]:
    """The sets a model trained on (its validation split's), by folder name; the first eight for older files."""
    dirs = (read_checkpoint(model).get("train_config") or {}).get("data_dirs") or SETS
    return tuple(Path(d).name for d in dirs)


def pick(samples: list[Sample], scores: list[float], groups: tuple[tuple[str, int], ...]) -> list[float]:
    """Scores of the samples in any of the (dataset, label) groups."""
    return [score for sample, score in zip(samples, scores) if (sample.dataset, sample.label) in groups]


def auc_of(negatives: list[float], positives: list[float]) -> float:
    """ROC AUC of positives against negatives."""
    return roc_auc([0] * len(negatives) + [1] * len(positives), negatives + positives)


def tpr_at_fpr(negatives: list[float], positives: list[float], budget: float) -> float:
    """Share of positives caught at the threshold that flags at most `budget` of the negatives."""
    threshold = float(np.quantile(negatives, 1 - budget, method="higher")) if negatives else 1.0
    return float(np.mean(np.asarray(positives) > threshold)) if positives else float("nan")


def flagged(values: list[float], threshold: float) -> float:
    """Share of scores at or above the threshold."""
    return float(np.mean(np.asarray(values) >= threshold)) if values else float("nan")


def goals(samples: list[Sample], scores: list[float], threshold: float, sets: tuple[str, ...] = SETS) -> dict[str, Any]:
    """Every goal of issue 9 that the shared validation data can measure."""
    hq, gan = pick(samples, scores, HQ_REALS), pick(samples, scores, GAN_FAKES)
    people, diffusion = pick(samples, scores, PEOPLE_REALS), pick(samples, scores, DIFFUSION_FAKES)
    result: dict[str, Any] = {
        "hq_real_portraits_flagged": flagged(hq, threshold),
        "gan_faces_caught": flagged(gan, threshold),
        "gan_vs_hq_real_auc": auc_of(hq, gan),
        "diffusion_people_vs_real_people_auc": auc_of(people, diffusion),
        "diffusion_people_caught_at_threshold": flagged(diffusion, threshold),
        "diffusion_people_caught_at_5pct_fpr": tpr_at_fpr(people, diffusion, 0.05),
        "real_scenes_flagged": flagged(pick(samples, scores, (("real_scenes_people", 0),)), threshold),
    }
    for name in sets:
        reals, fakes = pick(samples, scores, ((name, 0),)), pick(samples, scores, ((name, 1),))
        result[f"{name}:auc"] = auc_of(reals, fakes) if reals and fakes else None
        result[f"{name}:fpr"] = flagged(reals, threshold) if reals else None
        result[f"{name}:tpr"] = flagged(fakes, threshold) if fakes else None
        result[f"{name}:n"] = len(reals) + len(fakes)
    return result


def evaluate_model(model: Path, samples: list[Sample], sets: tuple[str, ...] = SETS) -> dict[str, Any]:
    """Goals on the stored images and on JPEG q75 + half-size copies."""
    loaded = load_model(model, "cpu")
    stored = score_samples(loaded, samples, None, 64, 1)
    degraded = score_samples(loaded, samples, degrader(75, 0.5), 64, 1)
    return {
        "model_version": loaded.version,
        "threshold": loaded.threshold,
        "stored": goals(samples, stored, loaded.threshold, sets),
        "q75_half": goals(samples, degraded, loaded.threshold, sets),
    }


def _fmt(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def print_tables(results: dict[str, dict[str, Any]], sets: tuple[str, ...] = SETS) -> None:
    """Markdown: the goal table, then per set AUC / FPR / TPR and the robustness cost."""
    names = list(results)
    print("| goal | " + " | ".join(results[n]["model_version"] for n in names) + " |")
    print("| --- |" + " ---: |" * len(names))
    for key in ("hq_real_portraits_flagged", "gan_faces_caught", "gan_vs_hq_real_auc",
                "diffusion_people_vs_real_people_auc", "diffusion_people_caught_at_threshold",
                "diffusion_people_caught_at_5pct_fpr", "real_scenes_flagged"):  # fmt: skip
        print(f"| {key} | " + " | ".join(_fmt(results[n]["stored"][key]) for n in names) + " |")
    print()
    print("| set | n | " + " | ".join(f"{results[n]['model_version']} AUC / FPR / TPR / AUC q75+half" for n in names)
          + " |")  # fmt: skip
    print("| --- | ---: |" + " ---: |" * len(names))
    for name in sets:
        cells = []
        for n in names:
            s, d = results[n]["stored"], results[n]["q75_half"]
            cells.append(f"{_fmt(s[name + ':auc'])} / {_fmt(s[name + ':fpr'])} / {_fmt(s[name + ':tpr'])} / "
                         f"{_fmt(d[name + ':auc'])}")  # fmt: skip
        print(f"| {name} | {results[names[0]]['stored'][name + ':n']} | " + " | ".join(cells) + " |")


def main() -> None:
    """Score, print, save."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="checkpoint or registered name whose validation split is used")
    parser.add_argument("--compare", nargs="*", default=[], help="more models scored on the same images")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    first = resolve_model(args.model)
    sets = sets_of(first)
    samples = select_samples([str(args.data / name) for name in sets], first, "val")
    results = {str(m): evaluate_model(resolve_model(m), samples, sets) for m in [args.model, *args.compare]}
    print_tables(results, sets)
    out = args.out or RUNS / f"{first.stem}_report.json"  # runs/ is ignored by git, unlike the weights
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nraw numbers: {out}")


if __name__ == "__main__":
    main()
