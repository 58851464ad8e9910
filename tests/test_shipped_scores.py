"""Every shipped model scores the sample images and a fixed slice of the shared sets as recorded.

The scores in `tests/data/shipped_scores.json` were recorded through `scanner submit` before the detector
moved into its own package; refactors of the detector must leave them unchanged (to 1e-5), through the
scanner's path and training's scoring alike. Re-record only for a deliberate change of a model's scores:
`.venv/bin/python -m tests.test_shipped_scores --record`.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from scanner.moderation.reports import report_rows
from scanner.pipeline.submit import open_database, submit
from scanner.registry import registered_models, resolve_model
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "tests" / "data" / "shipped_scores.json"
SHARED = ROOT.parent / "shared" / "data"
PER_FOLDER = 3  # the first files of each set's real/ and fake/ folders, by name
TOLERANCE = 5e-5  # float sums differ by thread count and CPU: one v9 score moved 1.05e-5 on another host


def benchmark_images() -> dict[str, Path]:
    """The images scored: samples/ always, and the first files of every shared set's folders where they exist."""
    images = {f"samples/{p.name}": p for p in sorted((ROOT / "samples").glob("*.jpg"))}
    if SHARED.is_dir():
        for folder in sorted(p for p in SHARED.glob("*/*") if p.is_dir()):
            files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))[:PER_FOLDER]
            images.update({f"shared/{p.relative_to(SHARED)}": p for p in files})
    return images


def submitted_scores(model: str, images: dict[str, Path], database: Path) -> dict[str, float | None]:
    """Each image's score through an embedded `scanner submit` with `model` (None: an error row)."""
    settings = make_settings(f"sqlite:///{database}", resolve_model(model))
    job_id = submit(settings, [str(p) for p in images.values()], wait=True).summary["job_id"]
    with open_database(settings)() as session:
        by_path = {row["uri"]: row["score"] for row in report_rows(session, job_id)}
    return {name: by_path[str(path)] for name, path in images.items()}


def training_scores(model: str, images: dict[str, Path]) -> dict[str, float]:
    """Each image's score through training's scoring (what `scanner evaluate` runs); all must decode."""
    from scanner.detector.checkpoint import load_model
    from training.data import Sample
    from training.evaluate import score_samples

    loaded = load_model(resolve_model(model), "cpu")
    names = list(images)
    samples = [Sample(images[name], 0, "bench", name, "bench") for name in names]
    return dict(zip(names, score_samples(loaded, samples, batch_size=16), strict=True))


def shipped_models() -> list[str]:
    """Every model name the registry ships."""
    return sorted(model.name for model in registered_models())


def close(a: float | None, b: float | None) -> bool:
    """Equal to TOLERANCE, or both missing."""
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, abs_tol=TOLERANCE))


@pytest.mark.parametrize("model", shipped_models())
def test_shipped_models_score_as_recorded(model: str, tmp_path: Path) -> None:
    recorded = json.loads(RECORD.read_text())[model]
    images = {name: path for name, path in benchmark_images().items() if name in recorded}
    assert len(images) >= 10 and (not SHARED.is_dir() or len(images) == len(recorded)), sorted(images)
    through_submit = submitted_scores(model, images, tmp_path / "scores.db")
    wrong = {n: (through_submit[n], recorded[n]) for n in images if not close(through_submit[n], recorded[n])}
    assert not wrong, wrong
    decodable = {name: path for name, path in images.items() if recorded[name] is not None}
    through_training = training_scores(model, decodable)
    wrong = {n: (s, recorded[n]) for n, s in through_training.items() if not close(s, recorded[n])}
    assert not wrong, wrong


def record(out: Path) -> None:
    """Score the benchmark with every shipped model and write the record (run from the repository root)."""
    import tempfile

    images = benchmark_images()
    scores = {}
    with tempfile.TemporaryDirectory() as scratch:
        for number, model in enumerate(shipped_models()):
            scores[model] = submitted_scores(model, images, Path(scratch) / f"{number}.db")
            print(f"{model}: {len(scores[model])} images", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(scores, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python -m tests.test_shipped_scores --record")
    record(RECORD)
