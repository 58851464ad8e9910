"""`scanner adapt`: a new model version from reviewers' decisions, checked before it is registered.

Stages: decisions (the latest real/fake decision per reviewed item of the jobs) -> bytes (the safe loader, the
reviewed sha256 only) -> views and features (the base network, as the scanner builds and scores them) -> a new
head fitted with the base's check set replayed -> evaluation on held-out decisions (grouped k-fold) and on the
check set kept apart -> guardrails -> registered in SQL. Only the head changes, so the adapted model scans at the
base's speed and every score here is the score `scanner submit` gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from torch import nn

from scanner.db import Item, Job, StoredModel
from scanner.detector.adaptation import (
    THRESHOLD_RULE,
    Evaluation,
    FitSettings,
    Reviewed,
    Tick,
    adapt_head,
    difference_hash,
    fold_count,
)
from scanner.detector.checkpoint import LoadedModel, load_model, read_checkpoint, renew_version
from scanner.detector.checkset import CheckSet, checkset_path, read_checkset
from scanner.detector.faces import FaceFinder
from scanner.detector.features import image_features
from scanner.detector.preprocess import decode_image
from scanner.detector.rates import without_nan
from scanner.model_store import check_new_name, checkpoint_path, register
from scanner.moderation.reports import latest_decision_subquery
from scanner.pipeline.loader import read_item
from scanner.registry import WEIGHTS_DIR, registered_models
from scanner.settings import Settings

MIN_PER_CLASS = 20  # decisions of each class below which held-out figures mean nothing


class AdaptError(ValueError):
    """Adaptation refused: too few decisions, no check set, or a guardrail failed (the message says which)."""


def decision_counts(images: list[Reviewed]) -> dict[str, int]:
    """Decisions used per class."""
    fakes = sum(image.label for image in images)
    return {"fake": fakes, "real": len(images) - fakes}


def latest_decisions(session: Any, job_ids: Sequence[int]) -> tuple[list[Reviewed], int]:
    """The latest real/fake decision of every reviewed item of the jobs (one per content), and the unsure count."""
    latest = latest_decision_subquery()
    rows = session.execute(
        select(Item.id, latest.c.decision, Item.sha256, Item.uri, Item.kind, latest.c.decision_id)
        .join(latest, latest.c.item_id == Item.id)
        .where(Item.job_id.in_(job_ids))
        .order_by(Item.id)
    ).all()
    unsure = sum(1 for row in rows if row[1] == "unsure")
    by_content: dict[str, Reviewed] = {}
    for item_id, decision, sha256, uri, kind, decision_id in rows:
        if decision not in ("real", "fake") or not sha256:
            continue
        reviewed = Reviewed(item_id, int(decision_id), int(decision == "fake"), sha256, uri, kind)
        if sha256 not in by_content or by_content[sha256].decision_id < reviewed.decision_id:
            by_content[sha256] = reviewed  # the same content reviewed twice: its latest decision
    return sorted(by_content.values(), key=lambda r: r.item_id), unsure


def read_reviewed(
    images: list[Reviewed], loaded: LoadedModel, settings: Settings, tick: Tick | None = None
) -> tuple[list[Reviewed], dict[str, list[str]]]:
    """Each image's bytes (only the reviewed content) and view features; the others listed by reason."""
    finder = FaceFinder(loaded.preprocess.search.faces) if loaded.preprocess.search.uses_faces else None
    kept: list[Reviewed] = []
    skipped: dict[str, list[str]] = {}
    for image in images:
        item, data = read_item(image.item_id, image.uri, image.kind, settings)
        reason = None
        if data is None:
            reason = f"unreadable ({item.error_code})"
        elif item.sha256 != image.sha256:
            reason = "changed since it was reviewed"
        else:
            try:
                decoded = decode_image(data, loaded.preprocess.decoding.decode_side, settings.max_pixels).image
            except ValueError as exc:
                reason = f"undecodable ({exc})"
            else:
                image.features = image_features(loaded.model, decoded, loaded.preprocess, finder)
                image.count, image.thumb = len(image.features), difference_hash(decoded)
                kept.append(image)
        if reason:
            skipped.setdefault(reason, []).append(image.uri)
        if tick:
            tick(1)
    return kept, skipped


def base_for(session: Any, settings: Settings, job_ids: Sequence[int], base: str | None) -> Path:
    """The base model's file: `base` (a name or file) or the model the jobs were scanned with."""
    if base:
        return checkpoint_path(settings.with_overrides(model_path=base))
    versions = set(session.scalars(select(Job.model_version).where(Job.id.in_(job_ids))))
    missing = set(job_ids) - set(session.scalars(select(Job.id).where(Job.id.in_(job_ids))))
    if missing:
        raise AdaptError(f"no job with id {', '.join(map(str, sorted(missing)))}")
    if len(versions) != 1:
        raise AdaptError(f"the jobs were scanned with {len(versions)} models ({', '.join(sorted(versions))}): "
                         "name the base with --base")  # fmt: skip
    version = versions.pop()
    configured = checkpoint_path(settings)  # SCANNER_MODEL / --model, when it is the jobs' model
    for path in (configured, *(model.path for model in registered_models())):
        if path.exists() and str(read_checkpoint(path)["model_version"]) == version:
            return path
    name = session.scalar(select(StoredModel.name).where(StoredModel.model_version == version))
    if name is None:
        raise AdaptError(f"the jobs' model {version} is neither shipped nor registered here: name it with --base")
    return checkpoint_path(settings.with_overrides(model_path=name))


def root_version(checkpoint: dict[str, Any]) -> str:
    """The shipped model an adapted chain started from (whose network, and check set, it shares)."""
    return str((checkpoint.get("adapted") or {}).get("root") or checkpoint["model_version"])


def adapted_checkpoint(
    base_file: Path, head: nn.Linear, threshold: float, provenance: dict[str, Any]
) -> dict[str, Any]:  # fmt: skip
    """The base's checkpoint with the new head and threshold, its provenance, and a new version."""
    checkpoint = read_checkpoint(base_file)
    checkpoint.pop("train_state", None)
    prefix = "head" if "head.weight" in checkpoint["state_dict"] else "classifier"
    checkpoint["state_dict"] = dict(checkpoint["state_dict"])
    checkpoint["state_dict"][f"{prefix}.weight"] = head.weight.detach().clone()
    checkpoint["state_dict"][f"{prefix}.bias"] = head.bias.detach().clone()
    provenance = {**provenance, "base": checkpoint["model_version"], "root": root_version(checkpoint)}
    checkpoint.update(threshold=threshold, threshold_rule=THRESHOLD_RULE, adapted=provenance)
    checkpoint.pop("calibrated_from", None)
    renew_version(checkpoint)
    return checkpoint


def now_text() -> str:
    """The current UTC time, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def load_base(base_file: Path, device: str) -> tuple[LoadedModel, CheckSet]:
    """The base model and its root's check set (beside the base's file, or shipped); refused without one."""
    loaded = load_model(base_file, device)
    root = root_version(loaded.meta)
    for folder in (base_file.parent, WEIGHTS_DIR):
        if (path := checkset_path(root, folder)).exists():
            return loaded, read_checkset(path)
    raise AdaptError(f"the base {loaded.version} has no check set (checkset-{root}.pt, beside it or shipped): "
                     "adapt a shipped model, or build one with python -m training.checkset")  # fmt: skip


@dataclass
class AdaptResult:
    """What `scanner adapt` did: the decisions used and left out, the evaluation and whether it registered."""

    name: str
    base: str
    counts: dict[str, int]
    unsure: int
    skipped: dict[str, list[str]]
    evaluation: Evaluation
    version: str = ""
    registered: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain types for --json and the model's stored details."""
        return {
            "name": self.name, "version": self.version, "base": self.base, "registered": self.registered,
            "decisions": self.counts, "unsure_ignored": self.unsure,
            "skipped": {reason: len(uris) for reason, uris in self.skipped.items()},
            "threshold": self.evaluation.threshold, "evaluation": without_nan(self.evaluation.rows),
            "failures": self.evaluation.failures,
        }  # fmt: skip


def run_adapt(
    settings: Settings, job_ids: Sequence[int], name: str, base: str | None = None, created_by: str = "",
    fit: FitSettings | None = None, progress_factory: Any = None,
) -> AdaptResult:  # fmt: skip
    """Adapt the base to the jobs' decisions and register it as `name` when every guardrail holds."""
    from scanner.connect import open_database

    sessions = open_database(settings)
    with sessions() as session:
        check_new_name(session, name)  # before any work
        base_file = base_for(session, settings, job_ids, base)
        reviewed, unsure = latest_decisions(session, job_ids)
    loaded, checkset = load_base(base_file, settings.device)
    tick = progress_factory("reading reviewed images", len(reviewed)) if progress_factory else None
    images, skipped = read_reviewed(reviewed, loaded, settings, tick)
    check_enough(images, unsure, skipped)
    folds = fold_count([image.label for image in images])
    tick = progress_factory("fitting and checking", folds + 1) if progress_factory else None
    adapted = adapt_head(loaded, images, checkset, fit or FitSettings(), tick)
    result = AdaptResult(name, loaded.version, decision_counts(images), unsure, skipped, adapted.evaluation)
    if adapted.evaluation.failures:
        return result
    summary = {key: value for key, value in result.to_dict().items() if key not in ("version", "registered", "base")}
    provenance = {
        **summary, "jobs": sorted(job_ids), "decision_ids": sorted(image.decision_id for image in images),
        "created_at": now_text(), "created_by": created_by,
    }  # fmt: skip
    checkpoint = adapted_checkpoint(base_file, adapted.head, adapted.evaluation.threshold, provenance)
    with sessions() as session:
        register(session, name, checkpoint, created_by, {**provenance, "base": loaded.version})
        session.commit()
    result.version, result.registered = str(checkpoint["model_version"]), True
    return result


def check_enough(images: list[Reviewed], unsure: int, skipped: dict[str, list[str]]) -> None:
    """Refuse too few decisions of either class, saying how many there are and how many are needed."""
    counts = decision_counts(images)
    if min(counts.values()) >= MIN_PER_CLASS:
        return
    left_out = "; ".join(f"{len(uris)} {reason}" for reason, uris in skipped.items())
    raise AdaptError(
        f"too few decisions: at least {MIN_PER_CLASS} fake and {MIN_PER_CLASS} real are needed; these jobs have "
        f"{counts['fake']} fake and {counts['real']} real usable ({unsure} unsure ignored"
        + (f"; left out: {left_out})" if left_out else ")")
    )
