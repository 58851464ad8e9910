"""`scanner train --recipe`: every stage of a shipped model's build in one resumable command (tiny data)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scanner.cli import app
from scanner.detector.checkpoint import read_checkpoint
from scanner.detector.checkset import checkset_path
from scanner.detector.preprocess import Preprocess
from training import recipe as recipes
from training.train import main as train_main

TINY = recipes.Recipe(
    sets=("portraits", "more_portraits"),
    train={
        "arch": "fauxnet",
        "arch_args": {"widths": [4, 8], "dropout": 0.0},
        "views": "faces",
        "size": 32,
        "max_side": 160,
        "epochs": 2,
        "batch_size": 8,
        "lr": 3e-3,
        "augment": "none",
        "balance": True,
        "threshold_rule": "source-fpr:0.05",
        "workers": 0,
        "mirror": ["whole", "face"],
    },  # fmt: skip
    face_detect_side=128,
    calibrate={"mirror_margin": 4.0, "trim_page": True, "turns": (90, 180, 270), "half_turn": "6,1"},
)


@pytest.fixture
def data_root(face_data: Path, tmp_path: Path) -> Path:
    """A folder holding the tiny recipe's two sets."""
    root = tmp_path / "data"
    root.mkdir()
    for name in TINY.sets:
        (root / name).symlink_to(face_data, target_is_directory=True)
    return root


@pytest.fixture
def tiny_recipe(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register the tiny recipe for one test."""
    monkeypatch.setitem(recipes.RECIPES, "tiny", TINY)
    return "tiny"


def test_one_command_builds_a_calibrated_release_with_the_recipes_scoring_settings(
    data_root: Path, tiny_recipe: str, tmp_path: Path
) -> None:
    out = tmp_path / "build"
    result = CliRunner().invoke(app, ["train", "--recipe", tiny_recipe, str(data_root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "face-boxes.json").exists() and (out / "train.pt").exists()
    shipped = read_checkpoint(out / "tiny.pt")
    preprocess = Preprocess.from_dict(shipped["preprocess"])
    assert preprocess.search.turns == (90, 180, 270) and preprocess.search.page is not None
    assert preprocess.search.half_turn is not None and preprocess.search.half_turn.below == 6.0
    assert preprocess.search.faces.detect_side == 128 and preprocess.scoring.mirror == ("whole", "face")
    low, high = preprocess.scoring.mirror_band
    assert high - low == pytest.approx(8.0)
    assert "train_state" not in shipped and shipped["calibrated_from"]
    assert len(read_checkpoint(out / "train.pt")["train_state"]["history"]) == 2
    assert f"wrote {out / 'tiny.pt'}" in result.output
    assert checkset_path(shipped["model_version"], out).exists()  # what scanner adapt needs, beside the release


def test_a_rerun_resumes_training_after_its_last_epoch_and_skips_finished_stages(
    data_root: Path, tiny_recipe: str, tmp_path: Path
) -> None:
    out = tmp_path / "build"
    config = recipes.recipe_config(TINY, recipes.recipe_dirs(TINY, data_root), out, "cpu")
    out.mkdir()
    lines: list[str] = []
    recipes.find_face_boxes(config, lines.append)
    boxes_written = (out / "face-boxes.json").stat().st_mtime_ns
    train_main(replace(config, epochs=1))  # a run stopped after its first epoch
    recipes.run_recipe(tiny_recipe, data_root, out, "cpu", lines.append)
    assert any("resuming" in line and "after epoch 1 of 2" in line for line in lines)
    assert (out / "face-boxes.json").stat().st_mtime_ns == boxes_written
    history = read_checkpoint(out / "train.pt")["train_state"]["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    trained = (out / "train.pt").stat().st_mtime_ns
    first = read_checkpoint(out / "tiny.pt")["model_version"]
    (out / "tiny.pt").unlink()
    recipes.run_recipe(tiny_recipe, data_root, out, "cpu", lines.append)
    assert (out / "train.pt").stat().st_mtime_ns == trained  # finished training is not repeated
    assert read_checkpoint(out / "tiny.pt")["model_version"] == first


def test_recipe_errors_name_what_is_wrong(data_root: Path, tiny_recipe: str, tmp_path: Path) -> None:
    runner = CliRunner()
    unknown = runner.invoke(app, ["train", "--recipe", "nope", str(data_root), "--out", str(tmp_path / "o")])
    assert unknown.exit_code == 1 and "unknown recipe 'nope'" in unknown.output
    (data_root / "more_portraits").unlink()
    missing = runner.invoke(app, ["train", "--recipe", tiny_recipe, str(data_root), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 1 and "more_portraits" in missing.output
    two = runner.invoke(app, ["train", "--recipe", tiny_recipe, str(data_root), str(data_root), "--out", "o"])
    assert two.exit_code == 2 and "one data folder" in two.output


def test_the_default_recipe_trains_on_all_eleven_shared_sets() -> None:
    default = recipes.RECIPES["default"]
    assert len(default.sets) == 11 and len(set(default.sets)) == 11
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if shared.is_dir():
        assert recipes.recipe_dirs(default, shared)
    assert default.train["arch"] == "effnet-lite0" and not default.train.get("init")
