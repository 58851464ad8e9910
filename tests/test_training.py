"""Training package: splits, the shared preprocessing path, checkpoints, one epoch, evaluate's JSON."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from scanner.cli import app
from scanner.detector.checkpoint import CheckpointError, load_model, read_checkpoint
from scanner.detector.networks import build_model
from scanner.detector.preprocess import Decoding, Preprocess, preprocess_bytes
from scanner.pipeline.loader import decode_item, read_item
from scanner.settings import Settings
from tests.conftest import tiny_config
from tests.imaging import encode, noisy_image
from training.data import ImageFolderDataset, Sample, find_samples, split_samples
from training.metrics import choose_threshold, roc_auc
from training.train import TrainConfig, evaluate, make_eval_loader, make_loader, make_optimizer, train_one_epoch


def _samples_with_groups() -> list[Sample]:
    samples = []
    for index in range(200):
        label = index % 2
        group = f"g{index // 4}" if index < 80 else f"solo{index}"
        samples.append(Sample(Path(f"/x/{index}.jpg"), label, "set", group, "real" if label == 0 else "fake"))
    return samples


def test_split_keeps_near_duplicate_groups_on_one_side() -> None:
    train, val = split_samples(_samples_with_groups(), 0.2, seed=3)
    train_groups = {s.group for s in train}
    val_groups = {s.group for s in val}
    assert not train_groups & val_groups
    assert 30 <= len(val) <= 50
    assert {s.label for s in val} == {0, 1}
    again = split_samples(_samples_with_groups(), 0.2, seed=3)
    assert [s.path for s in again[1]] == [s.path for s in val]


def test_manifest_groups_are_read(tmp_path: Path) -> None:
    for label in ("real", "fake"):
        (tmp_path / label).mkdir()
        for index in range(3):
            noisy_image(index).save(
                tmp_path / label / f"easy_{index}.jpg" if label == "fake" else tmp_path / label / f"r{index}.jpg"
            )
    (tmp_path / "manifest.csv").write_text("file,label,near_dup_group\nreal/r0.jpg,real,g1\nfake/easy_0.jpg,fake,g1\n")
    samples = {s.path.name: s for s in find_samples(tmp_path)}
    assert samples["r0.jpg"].group == samples["easy_0.jpg"].group
    assert samples["r1.jpg"].group != samples["r0.jpg"].group
    assert samples["easy_1.jpg"].stratum == "fake_easy"
    with pytest.raises(FileNotFoundError, match="neither real/ nor fake/"):
        find_samples(tmp_path / "real")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        find_samples(tmp_path / "missing")


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_flattened_onto_white_by_coverage(mode: str) -> None:
    """Clear pixels become white, opaque ones keep their colour, and partial coverage blends the two."""
    import numpy as np
    from PIL import Image

    from scanner.detector.preprocess import decode_image

    rng = np.random.default_rng(3)
    colour = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    alpha = np.tile(np.linspace(0, 255, 40).round().astype(np.uint8), (24, 1))
    image = Image.fromarray(np.dstack([colour, alpha]), "RGBA")
    if mode == "LA":
        image = image.convert("LA")
        colour = np.repeat(np.asarray(image.getchannel("L"))[..., None], 3, axis=2)
    elif mode == "P":  # a palette image with one transparent index
        image = Image.fromarray(colour).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        clear = int(np.asarray(image)[0, 0])
        image.info["transparency"] = clear
        alpha = np.where(np.asarray(image) == clear, 0, 255).astype(np.uint8)
        colour = np.asarray(image.convert("RGB"))
    expected = (colour.astype(np.float64) * alpha[..., None] + 255.0 * (255 - alpha[..., None])) / 255
    flat = np.asarray(decode_image(encode(image, "PNG"), 256).image, dtype=np.float64)
    assert flat.shape == colour.shape and np.abs(flat - expected).max() <= 1.0


def test_preprocessing_is_identical_in_training_and_inference(tmp_path: Path) -> None:
    path = tmp_path / "face.jpg"
    path.write_bytes(encode(noisy_image(5, 90), "JPEG", quality=90))
    config = Preprocess().changed(size=32)
    sample = Sample(path, 1, "t", "g", "fake")
    training_tensor = ImageFolderDataset([sample], config, augment=None)[0][0]
    settings = Settings(database_url="sqlite://", broker_url=None, model_path=path)
    loaded, data = read_item(1, str(path), "file", settings)
    assert data is not None
    views = decode_item(loaded, data, config, settings.max_pixels).views
    assert views is not None and len(views.tensors) == 1 and not views.boxes
    assert torch.equal(training_tensor, views.tensors[0])
    assert training_tensor.shape == (3, 32, 32)


def test_checkpoint_round_trips(tiny_model: Path) -> None:
    loaded = load_model(tiny_model, "cpu")
    meta = read_checkpoint(tiny_model)
    assert meta["arch"] == "paper-cnn" and meta["classes"] == ["real", "fake"]
    assert loaded.preprocess.decoding.size == 32
    assert loaded.version == meta["model_version"]
    assert 0.0 <= loaded.threshold <= 1.0
    assert "accuracy" in meta["metrics"] and meta["train_config"]["seed"] == 1
    rebuilt = build_model(meta["arch"], meta["arch_args"])
    rebuilt.load_state_dict(meta["state_dict"])
    batch = torch.stack([preprocess_bytes(encode(noisy_image(1)), loaded.preprocess.decoding)])
    with torch.inference_mode():
        assert torch.allclose(rebuilt.eval()(batch), loaded.model(batch))


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/fauxscan-pwned",))


def test_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    marker = Path("/tmp/fauxscan-pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"format": "fauxscan-checkpoint/1", "payload": _Exploit()}, path)
    with pytest.raises(CheckpointError, match=r"refusing .*pickled objects \(posix.system\).*can run code") as refused:
        read_checkpoint(path)
    assert not marker.exists()
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"format": "something-else"}))
    picture = tmp_path / "picture.pt"
    picture.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    messages = [str(refused.value)]
    for foreign in (plain, picture, empty):
        with pytest.raises(CheckpointError) as refused:
            read_checkpoint(foreign)
        messages.append(str(refused.value))
    assert "not a fauxscan checkpoint" in messages[2] and "empty or cut short" in messages[3]
    for message in messages:  # one line each, and never torch's advice to load the file with weights_only=False
        assert "\n" not in message and "weights_only` set to `False" not in message and "\x1b" not in message


def test_one_epoch_lowers_the_loss(toy_data: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = tiny_config(toy_data, tmp_path / "x.pt")
    model = build_model("paper-cnn", {"input_size": config.size, "width": 8})
    preprocess = Preprocess().changed(size=config.size)
    samples = find_samples(toy_data)
    loader = make_loader(samples, preprocess, None, config, shuffle=True)
    eval_loader = make_eval_loader(samples, preprocess, None, 16, 0)
    before, _, _ = evaluate(model, eval_loader, torch.device("cpu"), preprocess)
    optimizer, scheduler = make_optimizer(
        model, TrainConfig(data_dirs=[], out="", lr=1e-3, epochs=1, schedule="keras-decay"), len(loader)
    )
    train_one_epoch(model, loader, optimizer, scheduler, torch.device("cpu"))
    after, _, _ = evaluate(model, eval_loader, torch.device("cpu"), preprocess)
    assert after < before


def test_metrics_and_threshold_rules() -> None:
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    assert roc_auc(labels, scores) == pytest.approx(15 / 16)
    assert choose_threshold(labels, scores, "fpr:0.0") == pytest.approx(0.7)
    assert choose_threshold(labels, scores, "youden") in (0.4, 0.7)
    with pytest.raises(ValueError):
        choose_threshold(labels, scores, "magic")


def test_train_and_evaluate_commands(toy_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "paper.pt"
    result = runner.invoke(
        app, ["train", str(toy_data), "--arch", "paper-cnn", "--epochs", "1", "--size", "32", "--out", str(out),
              "--workers", "0", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "paper_plots").iterdir()} == {
        "loss.png",
        "accuracy.png",
        "confusion.png",
        "roc.png",
    }
    stored = read_checkpoint(out)
    assert stored["train_config"]["schedule"] == "keras-decay" and stored["train_config"]["batch_size"] == 32
    resumed = runner.invoke(app, ["train", str(toy_data), "--out", str(out), "--resume", str(out), "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert len(json.loads(out.with_suffix(".json").read_text())["history"]) == 2
    evaluated = runner.invoke(app, ["evaluate", str(toy_data), "--model", str(out), "--json", "--workers", "0"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.stdout)
    for key in ("n", "accuracy", "balanced_accuracy", "roc_auc", "threshold", "confusion", "per_stratum"):
        assert key in metrics
    assert metrics["n"] == 48
    assert set(metrics["confusion"]) == {"tp", "fp", "tn", "fn"}
    assert sum(metrics["confusion"].values()) == 48


def test_training_needs_both_classes_on_both_sides_and_an_epoch(toy_data: Path, tmp_path: Path) -> None:
    """A folder of reals alone once trained 30 epochs and wrote a model with an AUC of NaN and a threshold fitted on
    reals only; a real-only set is welcome beside others (real_scenes_people), never alone."""
    runner = CliRunner()
    args = ["--arch", "paper-cnn", "--size", "32", "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "m.pt")]
    shutil.copytree(toy_data / "real", tmp_path / "reals" / "real")
    reals_only = runner.invoke(app, ["train", str(tmp_path / "reals"), *args])
    assert reals_only.exit_code == 1 and "need real and fake images" in reals_only.stderr, reals_only.output
    assert "0 fake" in reals_only.stderr and not (tmp_path / "m.pt").exists()
    for option in ("--epochs", "--batch-size"):
        zero = runner.invoke(app, ["train", str(toy_data), *args, option, "0"])
        assert zero.exit_code == 2 and option in zero.stderr and not (tmp_path / "m.pt").exists()


def test_evaluate_reports_errors_cleanly(tiny_model: Path, toy_data: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--model", str(tmp_path / "none.pt")])
    assert result.exit_code == 1
    assert "not found" in result.stderr
    base = ["evaluate", str(toy_data), "--model", str(tiny_model), "--workers", "0"]
    for scale in ("0", "-1", "5", "nan"):  # once scored as 8 px or enlarged copies, or a traceback (nan)
        bad = CliRunner().invoke(app, [*base, "--scale", scale])
        assert bad.exit_code == 1 and bad.stderr.startswith("error: --scale must be over 0"), bad.output
    for option, value in (("--jpeg-quality", "500"), ("--jpeg-quality", "0"), ("--batch-size", "0")):
        bad = CliRunner().invoke(app, [*base, option, value])
        assert bad.exit_code == 2 and option in bad.stderr, bad.output


def test_tiny_model_learns_the_toy_task(tiny_model: Path, toy_data: Path) -> None:
    from training.evaluate import run_evaluation

    metrics = run_evaluation([str(toy_data)], tiny_model, device="cpu", workers=0)
    assert metrics["roc_auc"] > 0.9


def test_a_resumed_run_does_not_replay_the_first_epochs_draws(toy_data: Path) -> None:
    from training.augment import PRESETS, Augmenter
    from training.train import stream_seed

    config = TrainConfig(data_dirs=[str(toy_data)], out="", balance=True, samples_per_epoch=40, workers=0, seed=3)
    samples = find_samples(toy_data)

    def first_draws(first_epoch: int) -> list[int]:
        return list(
            make_loader(
                samples, Preprocess().changed(size=32), None, config, shuffle=True, first_epoch=first_epoch
            ).sampler
        )

    assert first_draws(1) == first_draws(1)  # a fresh run is reproducible, as before
    assert first_draws(5) == first_draws(5) and first_draws(5) != first_draws(1)
    image = noisy_image(2)
    fresh, resumed = Augmenter(PRESETS["robust"], stream_seed(3, 1)), Augmenter(PRESETS["robust"], stream_seed(3, 5))
    assert fresh(image).tobytes() != resumed(image).tobytes()


def test_still_presets_never_rotate_and_edits_sharpen_blur_or_resample_as_photo_tools_do(
    toy_data: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from training.augment import PRESETS, AugmentConfig, Augmenter, sharpen_or_blur

    image = Image.new("RGB", (96, 96), (200, 180, 160))  # any rotation fills a corner with black
    rotated = [Augmenter(PRESETS["robust-faces"], seed)(image) for seed in range(10)]
    assert sum(min(out.convert("L").getextrema()) < 60 for out in rotated) >= 6
    for preset in ("robust-faces-still", "robust-edits", "robust-edits-mixed"):
        outputs = [Augmenter(PRESETS[preset], seed)(image) for seed in range(20)]
        assert all(min(out.convert("L").getextrema()) > 100 for out in outputs), preset
    noisy = noisy_image(5)
    edited = {sharpen_or_blur(noisy, random.Random(seed)).tobytes() for seed in range(8)}
    assert noisy.tobytes() not in edited and len(edited) == 8
    halving = AugmentConfig(rotate_degrees=0.0, hflip=0.0, rescale_prob=1.0, rescale=(0.5, 0.5))
    for mixed, filters in ((False, 1), (True, 4)):  # bilinear only, or bilinear, bicubic, Lanczos and box
        config = replace(halving, mixed_resampling=mixed)
        assert len({Augmenter(config, seed)(noisy).tobytes() for seed in range(40)}) == filters
    result = CliRunner().invoke(app, ["train", str(toy_data), "--out", str(tmp_path / "m.pt"), "--augment", "sharp"])
    assert result.exit_code == 2 and "--augment must be one of paper, robust" in result.stderr
    assert "robust-edits-mixed" in result.stderr and not (tmp_path / "m.pt").exists()


def test_gray_and_noise_presets_add_black_and_white_and_noisy_copies_to_a_tenth_of_the_draws() -> None:
    from dataclasses import replace

    from training.augment import PRESETS, AugmentConfig, Augmenter

    image = noisy_image(7)
    still = AugmentConfig(rotate_degrees=0.0, hflip=0.0)
    grays = [Augmenter(replace(still, gray_prob=1.0), seed)(image) for seed in range(3)]
    for out in grays:
        red, green, blue = out.split()
        assert red.tobytes() == green.tobytes() == blue.tobytes() and out.size == image.size
    noisy = [Augmenter(replace(still, noise_prob=1.0), seed)(image) for seed in range(4)]
    differences = [np.abs(np.asarray(out, np.float32) - np.asarray(image, np.float32)) for out in noisy]
    assert all(0.5 < diff.mean() < 8.0 for diff in differences)  # 2-8 grey levels, clipped at 0 and 255
    assert len({out.tobytes() for out in noisy}) == 4
    shares = []
    for preset in ("robust-edits-gray", "robust-edits-gray-noise"):
        outputs = [Augmenter(PRESETS[preset], seed)(image) for seed in range(200)]
        shares.append(sum(len(set(out.getpixel((9, 9)))) == 1 for out in outputs) / 200)
    assert all(0.04 < share < 0.18 for share in shares)  # a tenth of the draws are black and white


def test_init_refuses_weights_trained_on_another_split_of_the_same_sets(
    toy_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """Fine-tuning with another --seed would validate on images the starting weights trained on (seeds split)."""
    import shutil
    from dataclasses import replace

    from training.train import main as train_main

    start = replace(tiny_config(toy_data, tmp_path / "next.pt", epochs=1), init=str(tiny_model))
    refusals = {"--seed 1": {"seed": 2}, "--max-per-dataset 0": {"max_per_dataset": 10},
                "validation share 0.2": {"val_fraction": 0.3}}  # fmt: skip
    for earlier, changed in refusals.items():
        with pytest.raises(ValueError, match=f"was trained on {toy_data.name} with {earlier}:") as refused:
            train_main(replace(start, **changed))
        assert "validation split would hold images those weights trained on" in str(refused.value)
        assert not (tmp_path / "next.pt").exists()
    train_main(start)  # the same split: allowed
    assert read_checkpoint(tmp_path / "next.pt")["train_config"]["init"] == str(tiny_model)
    other_set = tmp_path / "other_set"  # other sets: any split, nothing learnt is in their validation
    shutil.copytree(toy_data, other_set)
    train_main(replace(start, data_dirs=[str(other_set)], seed=2, out=str(tmp_path / "other.pt")))
    assert (tmp_path / "other.pt").exists()


def test_noise_stream_model_starts_as_the_plain_one_and_learns_from_residuals(toy_data: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from scanner.detector.networks import predict_scores
    from training.evaluate import score_samples
    from training.train import init_weights
    from training.train import main as train_main

    plain = replace(tiny_config(toy_data, tmp_path / "plain.pt", epochs=1), arch="effnet-lite0",
                    arch_args={"dropout": 0.0}, pretrained=False, threshold_rule="fpr:0.05")  # fmt: skip
    train_main(plain)
    samples = find_samples(toy_data)
    batch = torch.stack([preprocess_bytes(s.path.read_bytes(), Decoding(size=32)) for s in samples])
    extended = build_model("effnet-lite0-srm", {"dropout": 0.0}).eval()
    init_weights(extended, read_checkpoint(tmp_path / "plain.pt"), "effnet-lite0-srm", {"dropout": 0.0})
    with torch.inference_mode():
        before = predict_scores(load_model(tmp_path / "plain.pt", "cpu").model, batch)
        assert torch.equal(predict_scores(extended, batch), before)  # the noise stem starts at zero
    train_main(replace(plain, out=str(tmp_path / "srm.pt"), arch="effnet-lite0-srm", init=str(tmp_path / "plain.pt")))
    loaded = load_model(tmp_path / "srm.pt", "cpu")
    assert read_checkpoint(tmp_path / "srm.pt")["state_dict"]["_noise_stem.weight"].abs().sum() > 0
    with torch.inference_mode():
        direct = predict_scores(loaded.model, batch).tolist()
    assert score_samples(loaded, samples, batch_size=8, workers=0) == pytest.approx(direct, abs=1e-5)
    with pytest.raises(ValueError, match="--init"):  # a plain model cannot start from an extended one
        train_main(replace(plain, out=str(tmp_path / "bad.pt"), init=str(tmp_path / "srm.pt")))
