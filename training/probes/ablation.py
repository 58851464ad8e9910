"""What each scoring rule adds: the model recalibrated without it, at the same per-source false-positive rule.

    python -m training.probes.ablation runs/v10/default.pt [--variants "shipped,no page cut"] [--edits all]

For each rule (the page cut, the turns, the half-turn check, mirroring and its band, the native patch) a copy of
the model is calibrated without it on the same validation split (`scanner model calibrate`, threshold rule
`source-fpr:0.05`), then every copy scores the split as stored and under the edits the rule is for. Printed per
copy and edit: mean recall over the fake sources, GAN faces caught, diffusion people caught and the highest share
of a real source flagged. `--edits` scores every variant under the same edits instead (`all`: every everyday edit
of `training.probes.benign_edits`), for rules that are for no edit in particular.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from scanner.detector.checkpoint import load_model, read_checkpoint
from scanner.registry import resolve_model
from training.evaluate import calibrate_checkpoint, score_samples, select_samples
from training.probes.benign_edits import EDITS

# Each variant: the calibration changes that remove the rule, and the edits the rule is for (besides `stored`)
VARIANTS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "shipped": ({}, ("screenshot", "meme", "rot90", "rot180")),
    "no page cut": ({"trim_page": False}, ("screenshot", "meme")),
    "no turns (nor half-turn check)": ({"turn_faces": False, "half_turn": "none"}, ("rot90", "rot180")),
    "no half-turn check": ({"half_turn": "none"}, ("rot180",)),
    "no mirroring": ({"mirror": (), "mirror_margin": 0.0}, ()),
    "mirroring every view (no band)": ({"mirror_margin": 0.0}, ()),
    "no native patch": ({"patch_min_side": 1_000_000}, ()),
    "no mirroring nor native patch": ({"mirror": (), "mirror_margin": 0.0, "patch_min_side": 1_000_000}, ()),
}
GAN = ("hardfakevsrealfaces", "ffhq_stylegan_256", "generated_faces")


def figures(samples: list[Any], scores: list[float], threshold: float) -> dict[str, float]:
    """Mean recall over fake sources, GAN and diffusion caught, the worst real source's share flagged."""
    by_source: dict[tuple[str, int], list[bool]] = {}
    for sample, score in zip(samples, scores):
        by_source.setdefault((sample.dataset, sample.label), []).append(score >= threshold)
    recall = {name: float(np.mean(hits)) for (name, label), hits in by_source.items() if label == 1}
    flagged = {name: float(np.mean(hits)) for (name, label), hits in by_source.items() if label == 0}
    gan = [hit for (name, label), hits in by_source.items() if label == 1 and name in GAN for hit in hits]
    worst = max(flagged, key=lambda name: flagged[name])
    return {
        "mean recall": float(np.mean(list(recall.values()))),
        "GAN caught": float(np.mean(gan)) if gan else float("nan"),
        "diffusion caught": recall.get("diffusion_people_multi", float("nan")),
        "worst real flagged": flagged[worst], "worst real": worst,  # type: ignore[dict-item]
    }  # fmt: skip


def main() -> None:
    """Calibrate each variant, score the edits, print one row per variant and edit."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--edits", default=None, help="comma-separated edits for every variant, or all")
    parser.add_argument("--out", type=Path, default=None, help="write every score here (JSON), to compare offline")
    args = parser.parse_args()
    chosen = None if args.edits is None else tuple(EDITS) if args.edits == "all" else tuple(args.edits.split(","))
    if unknown := [edit for edit in chosen or () if edit not in EDITS]:
        parser.error(f"unknown edit(s): {', '.join(unknown)}")
    model = resolve_model(args.model)
    dirs = [str(args.data / Path(d).name) for d in read_checkpoint(model)["train_config"]["data_dirs"]]
    samples = select_samples(dirs, model, "val")
    print(f"{model}: {len(samples)} validation images; threshold rule source-fpr:0.05 refitted for each variant")
    print("| variant | edit | threshold | mean recall, fakes | GAN caught | diffusion caught | worst real flagged |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    saved: dict[str, Any] = {"samples": [[s.dataset, s.label] for s in samples], "variants": {}}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.variants.split(","):
            changes, edits = VARIANTS[name]
            target = model
            if changes:
                target = Path(folder) / "variant.pt"
                calibrate_checkpoint(model, target, dirs, "cpu", workers=1, **changes)
            loaded = load_model(target, "cpu")
            saved["variants"][name] = {"threshold": loaded.threshold, "scores": {}}
            for edit in chosen or ("stored", *edits):
                scores = score_samples(loaded, samples, EDITS[edit], 64, 1)
                saved["variants"][name]["scores"][edit] = scores
                got = figures(samples, scores, loaded.threshold)
                cells = [f"{got[key]:.3f}" for key in ("mean recall", "GAN caught", "diffusion caught")]
                worst = f"{got['worst real flagged']:.3f} ({got['worst real']})"
                print(f"| {name} | {edit} | {loaded.threshold:.4f} | {' | '.join(cells)} | {worst} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(saved) + "\n")


if __name__ == "__main__":
    main()
