"""Markdown table of validation metrics per data set for one or more checkpoints (each on its own
validation split), plus robustness (JPEG q75 + half size) and a uniform q90 re-encode.

    .venv/bin/python scripts/model_report.py runs/fauxnet.pt runs/paper.pt --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.evaluate import run_evaluation

DATASETS = ("ciplab_real_and_fake_face", "hardfakevsrealfaces", "lfw_faceswap", "cifake")
VARIANTS = {"stored": (None, None), "q75+half": (75, 0.5), "q90": (90, None)}


def row(model: Path, data: Path, dataset: str) -> dict[str, dict]:
    """Metrics of one model on one data set's validation split under each variant."""
    return {
        name: run_evaluation([str(data / dataset)], model, "val", "cpu", 64, quality, scale, workers=1)
        for name, (quality, scale) in VARIANTS.items()
    }


def main() -> None:
    """Print the table and write the raw metrics next to each checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    print("| model | data set | n | accuracy | balanced | ROC AUC | FPR (reals) | acc @0.5 | acc q75+half | acc q90 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model in args.models:
        results = {dataset: row(model, args.data, dataset) for dataset in DATASETS}
        model.with_name(model.stem + "_eval.json").write_text(json.dumps(results, indent=1))
        for dataset, variants in results.items():
            m = variants["stored"]
            print(
                f"| {m['model_version']} | {dataset} | {m['n']} | {m['accuracy']:.3f} | {m['balanced_accuracy']:.3f} "
                f"| {m['roc_auc']:.3f} | {m['false_positive_rate']:.3f} | {m['accuracy_at_0_5']:.3f} "
                f"| {variants['q75+half']['accuracy']:.3f} | {variants['q90']['accuracy']:.3f} |"
            )
            for stratum, values in m.get("per_stratum", {}).items():
                if stratum.startswith("fake_"):
                    print(f"|  | {dataset} {stratum} | {values['n']} | {values['accuracy']:.3f} |  |  |  |  |  |  |")


if __name__ == "__main__":
    main()
