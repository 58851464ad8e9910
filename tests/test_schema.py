"""The checkpoint schema: every older version a fauxscan wrote reads as the same model at the current version."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from scanner.detector.checkpoint import CheckpointError, load_model, read_checkpoint, renew_version, save_checkpoint
from scanner.detector.preprocess import Preprocess
from scanner.detector.schema import CURRENT_FORMAT, FORMAT8_PAGE, FORMAT8_TURNS, SCHEMA_VERSION
from scanner.registry import resolve_model


def as_written_by(checkpoint: dict[str, Any], version: int) -> dict[str, Any]:
    """The dictionary a fauxscan of `version` wrote for the same model (its flags and its dead keys)."""
    preprocess = dict(checkpoint["preprocess"])
    if 8 <= version <= 10 and preprocess.get("page") == asdict(FORMAT8_PAGE):
        del preprocess["page"]
        preprocess["trim_page"] = True
    if 8 <= version <= 10 and preprocess.get("turns") == list(FORMAT8_TURNS):
        del preprocess["turns"]
        preprocess["turn_faces"] = True
    if version <= 2:
        preprocess.update(resize="clamp-shorter-side-center-crop", extra={})
    return {**checkpoint, "format": f"fauxscan-checkpoint/{version}", "preprocess": preprocess}


@pytest.mark.parametrize("turns", [[90, 270], [90, 180, 270]])
@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_every_older_version_reads_as_the_same_model(version: int, turns: list[int], tmp_path: Path) -> None:
    current = read_checkpoint(resolve_model("effnet-faces"))
    current["preprocess"]["turns"] = turns
    if 180 not in turns:
        del current["preprocess"]["half_turn"]  # a half-turn check needs the half turn
    written = as_written_by(current, version)
    assert (8 <= version and turns == [90, 270]) == ("turn_faces" in written["preprocess"])
    save_checkpoint(written, tmp_path / "old.pt")
    upgraded = read_checkpoint(tmp_path / "old.pt")
    assert upgraded["format"] == CURRENT_FORMAT and upgraded["model_version"] == current["model_version"]
    assert Preprocess.from_dict(upgraded["preprocess"]) == Preprocess.from_dict(current["preprocess"])
    assert load_model(tmp_path / "old.pt", "cpu").preprocess.search.page == FORMAT8_PAGE


def test_a_file_from_a_later_version_or_no_version_is_refused(tmp_path: Path) -> None:
    current = read_checkpoint(resolve_model("fauxnet-fast"))
    for name, expected in ((f"fauxscan-checkpoint/{SCHEMA_VERSION + 1}", "upgrade fauxscan"),
                           ("fauxscan-checkpoint/0", "upgrade fauxscan"), ("fauxscan-checkpoint/x", "not a fauxscan"),
                           ("other/3", "not a fauxscan")):  # fmt: skip
        save_checkpoint({**current, "format": name}, tmp_path / "f.pt")
        with pytest.raises(CheckpointError, match=expected):
            read_checkpoint(tmp_path / "f.pt")


def test_the_version_hash_reads_only_settings_that_differ_from_their_defaults() -> None:
    """One generic rule: a setting written out at its default hashes as one left out, and any change counts."""
    assert Preprocess().to_dict() == {}
    checkpoint = read_checkpoint(resolve_model("fauxnet-fast"))
    explicit = {**checkpoint, "preprocess": {**checkpoint["preprocess"], "precision": "float32", "mirror": []}}
    bare = {**checkpoint, "preprocess": Preprocess.from_dict(checkpoint["preprocess"]).to_dict()}
    assert renew_version(dict(explicit)) == renew_version(dict(bare))
    changed = Preprocess.from_dict(checkpoint["preprocess"]).changed(precision="bfloat16").to_dict()
    assert changed["precision"] == "bfloat16"
    assert renew_version({**checkpoint, "preprocess": changed}) != renew_version(dict(bare))


def test_view_offsets_are_read_by_kind_and_stored_as_they_always_were() -> None:
    """A view kind's offset is looked up by its name; the file keeps the list in VIEW_KINDS order, so the shipped
    models' versions (which hash it) are unchanged, and a kind a model does not name counts as 0."""
    checkpoint = read_checkpoint(resolve_model("effnet-faces"))
    stored = checkpoint["preprocess"]["view_offsets"]
    preprocess = Preprocess.from_dict(checkpoint["preprocess"])
    assert preprocess.scoring.view_offsets == dict(zip(("whole", "patch", "face"), stored))
    assert preprocess.to_dict()["view_offsets"] == stored
    assert renew_version(dict(checkpoint)) == checkpoint["model_version"]
    fewer = Preprocess().changed(view_offsets={"whole": 1.5, "patch": 0.5})
    assert fewer.to_dict()["view_offsets"] == [1.5, 0.5] and fewer.scoring.offset("face") == 0.0
    assert Preprocess.from_dict({"view_offsets": [1.5, 0.5]}).scoring.view_offsets == {"whole": 1.5, "patch": 0.5}
    assert Preprocess().changed(view_offsets={"face": 2.0}).to_dict()["view_offsets"] == [0.0, 0.0, 2.0]
