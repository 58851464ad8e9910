"""The checkpoint schema: one current version, and one chain of upgraders from every format fauxscan ever wrote.

A checkpoint names its version in `format` ("fauxscan-checkpoint/N"). Reading runs it up the chain, one small
step per version as Alembic runs migrations (the flags versions 8 to 10 wrote become the settings they stood
for), so the rest of the code knows only the current schema; this module
is the only place that knows older ones. Preprocessing settings (decoding, view search and scoring, stored as one
flat mapping) are written where they differ from their defaults (`Preprocess.to_dict`), so the defaults are part of
the schema: a change of a default is a new version whose upgrader writes the old default into older files.

| version | what it added (an older fauxscan refuses the file, since it would score it wrongly) |
| --- | --- |
| 1 | architecture, preprocessing, threshold, weights |
| 2 | face-aware views ("views", "faces") |
| 3 | calibrated views ("view_offsets") |
| 4 | mirror averaging ("mirror") |
| 5 | the inference precision ("precision") |
| 6 | the native patch on large images only ("patch_min_side") |
| 7 | mirroring near the threshold only ("mirror_band") |
| 8 | the page cut and turned faces as flags ("trim_page", "turn_faces") |
| 9 | the page search's settings and the turns ("page", "turns") where they were not version 8's |
| 10 | the half-turn check ("half_turn") |
| 11 | one schema: every file written at the current version, settings where they differ from the defaults |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from scanner.detector.faces import HalfTurnCheck
from scanner.detector.pages import PageSettings
from scanner.detector.preprocess import PRECISIONS, SETTING_NAMES, VIEW_KINDS, check_half_turn, check_turns

PREFIX = "fauxscan-checkpoint/"
SCHEMA_VERSION = 11
CURRENT_FORMAT = f"{PREFIX}{SCHEMA_VERSION}"

# What a version 8 file's flags meant: the page cut v7 was calibrated with and the two quarter turns.
FORMAT8_PAGE = PageSettings(
    tolerance=4, flat_side_share=0.95, straight_share=0.9, min_photo_share=0.1, min_photo_side=32,
    min_trim_share=0.03, second_photo_share=0.2, search_side=1024,
)  # fmt: skip
FORMAT8_TURNS = (90, 270)


class CheckpointError(Exception):
    """The file is not a usable fauxscan checkpoint."""


def _unchanged(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A step whose version only added settings that older files lack, meaning their defaults."""
    return checkpoint


def _one_schema(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """10 -> 11: versions 8 to 10 wrote the page cut and the quarter turns of version 8 as flags, "trim_page" and
    "turn_faces"; they become the settings they stood for. "resize" and "extra", which early files hold and no
    version read (the one resize there was), go."""
    preprocess = {k: v for k, v in checkpoint.get("preprocess", {}).items() if k not in ("resize", "extra")}
    for flag, setting in (("trim_page", "page"), ("turn_faces", "turns")):
        if flag in preprocess and setting in preprocess:
            raise CheckpointError(f"has both {flag} and {setting}: expected one")
        if not isinstance(preprocess.get(flag, False), bool):
            raise CheckpointError(f"has an unusable {flag}: expected true or false")
    if preprocess.pop("trim_page", False):
        preprocess["page"] = asdict(FORMAT8_PAGE)
    if preprocess.pop("turn_faces", False):
        preprocess["turns"] = list(FORMAT8_TURNS)
    return {**checkpoint, "preprocess": preprocess}


# UPGRADES[n] turns a version n checkpoint into a version n + 1 one.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _unchanged, 2: _unchanged, 3: _unchanged, 4: _unchanged, 5: _unchanged, 6: _unchanged, 7: _unchanged,
    8: _unchanged, 9: _unchanged, 10: _one_schema,
}  # fmt: skip


def schema_version(checkpoint: Any, path: Path) -> int:
    """The version a checkpoint dictionary names; CheckpointError for anything else or a version from the future."""
    name = str(checkpoint.get("format", "")) if isinstance(checkpoint, dict) else ""
    number = name.removeprefix(PREFIX)
    if not name.startswith(PREFIX) or not number.isdigit():
        raise CheckpointError(f"{path} is not a fauxscan checkpoint")
    if not 1 <= int(number) <= SCHEMA_VERSION:
        raise CheckpointError(
            f"{path} is a {name} file; this fauxscan reads {PREFIX}1 to {SCHEMA_VERSION}: upgrade fauxscan to use it"
        )
    return int(number)


def upgrade(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint at the current version, checked; CheckpointError naming the file and what is wrong."""
    version = schema_version(checkpoint, path)
    try:
        for step in range(version, SCHEMA_VERSION):
            checkpoint = UPGRADES[step](checkpoint)
    except CheckpointError as exc:
        raise CheckpointError(f"{path} {exc}") from None
    checkpoint = {**checkpoint, "format": CURRENT_FORMAT}
    check_preprocess(checkpoint.get("preprocess", {}), path)
    return checkpoint


def check_preprocess(preprocess: dict[str, Any], path: Path) -> None:
    """Refuse current-schema settings no scorer can use, naming the file and the setting."""
    if unknown := sorted(set(preprocess) - SETTING_NAMES):
        raise CheckpointError(f"{path} has unknown setting(s) {', '.join(map(str, unknown))} for its version")
    _check_numbers(path, "view_offsets", preprocess.get("view_offsets"), len(VIEW_KINDS))
    band = preprocess.get("mirror_band")
    _check_numbers(path, "mirror_band", band, 2)
    if band is not None and band[0] > band[1]:
        raise CheckpointError(f"{path} has an unusable mirror_band {band!r}: expected [low, high], low <= high")
    patch_min_side = preprocess.get("patch_min_side", 0)
    if not isinstance(patch_min_side, int) or isinstance(patch_min_side, bool) or patch_min_side < 0:
        raise CheckpointError(f"{path} has an unusable patch_min_side {patch_min_side!r}: expected a whole number >= 0")
    try:
        check_mirror(preprocess.get("mirror", []))
        check_precision(preprocess.get("precision", "float32"))
        if "page" in preprocess:
            PageSettings.from_dict(preprocess["page"])
        if "turns" in preprocess:
            check_turns(preprocess["turns"])
        if "half_turn" in preprocess:
            check = HalfTurnCheck.from_dict(preprocess["half_turn"])
            check_half_turn(preprocess.get("views", "center"), preprocess.get("turns", ()), check)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has unusable settings: {exc}") from None


def _check_numbers(path: Path, name: str, values: Any, count: int) -> None:
    """A list of `count` finite numbers, where present."""
    if values is None:
        return
    numbers = isinstance(values, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if not numbers or len(values) != count or not all(math.isfinite(v) for v in values):
        raise CheckpointError(f"{path} has unusable {name} {values!r}: expected {count} finite numbers")


def check_mirror(kinds: Any) -> None:
    """Mirrored view kinds, where given, are distinct names from VIEW_KINDS; raises ValueError otherwise."""
    names = isinstance(kinds, list | tuple) and all(isinstance(kind, str) for kind in kinds)
    if not names or len(set(kinds)) != len(kinds) or not set(kinds) <= set(VIEW_KINDS):
        raise ValueError(f"unusable mirror view kinds {kinds!r}: choose among {', '.join(VIEW_KINDS)}")


def check_precision(precision: Any) -> None:
    """The inference precision is one of PRECISIONS; raises ValueError otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"unusable precision {precision!r}: choose among {', '.join(PRECISIONS)}")
