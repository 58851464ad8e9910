"""The review queue: a job's items in review order (flagged first, by score), filters, paging and decisions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import and_, delete, exists, func, insert, literal, or_, select
from sqlalchemy.orm import Session, aliased

from scanner.db import Decision, Face, Hold, Item, Verdict, dialect_insert, row_by_id, utcnow
from scanner.detector.preprocess import VIEW_WORDS
from scanner.moderation.reports import get_job
from scanner.moderation.review import DECISIONS, ReviewError, check_decision

PER_PAGE = 50
LABELS = ("fake", "real")
STANDING = Decision.retracted_at.is_(None)  # a decision that counts: not undone
REVIEWED = ("yes", "no")
# The latest decision: one of the decisions, or "disagree": a reviewer said fake or real and the model the other.
DECIDED = ("fake", "real", "unsure", "disagree")


class FilterError(ValueError):
    """A queue filter with a value it cannot have."""


@dataclass(frozen=True)
class QueueFilter:
    """What part of a job's queue to show; empty fields mean no restriction."""

    label: str = ""
    reviewed: str = ""
    error_code: str = ""
    score_min: float | None = None
    score_max: float | None = None
    decided: str = ""
    reviewer: str = ""
    name: str = ""  # a part of the file name or URL, any case

    @classmethod
    def parse(cls, params: Any) -> QueueFilter:
        """Filters from query parameters; a bad value raises FilterError naming the parameter."""
        label, reviewed = params.get("label", ""), params.get("reviewed", "")
        if label not in ("", *LABELS):
            raise FilterError(f"label must be fake or real, not {label!r}")
        if reviewed not in ("", *REVIEWED):
            raise FilterError(f"reviewed must be yes or no, not {reviewed!r}")
        error_code = params.get("error", "")
        if len(error_code) > 32 or not all(c.isalnum() or c == "_" for c in error_code):
            raise FilterError("error must be an error code such as decode_error, or 'any'")
        decided, reviewer = params.get("decided", ""), params.get("reviewer", "").strip()
        if decided not in ("", *DECIDED):
            raise FilterError(f"decided must be one of {', '.join(DECIDED)}, not {decided!r}")
        if len(reviewer) > 128:
            raise FilterError("reviewer must be a name of at most 128 characters")
        name = params.get("name", "").strip()
        if len(name) > 200:
            raise FilterError("name must be a part of a file name or URL of at most 200 characters")
        score_min, score_max = _score(params, "min"), _score(params, "max")
        return cls(label, reviewed, error_code, score_min, score_max, decided, reviewer, name)

    def query_pairs(self) -> list[tuple[str, Any]]:
        """The filters set, as (parameter, value) pairs (hidden fields of a form that keeps them)."""
        values = {
            "label": self.label, "reviewed": self.reviewed, "error": self.error_code, "min": self.score_min,
            "max": self.score_max, "decided": self.decided, "reviewer": self.reviewer, "name": self.name,
        }  # fmt: skip
        return [(key, value) for key, value in values.items() if value not in ("", None)]

    def query_string(self, **extra: Any) -> str:
        """These filters (and any extra parameters) as a URL query string, without the '?'."""
        return urlencode([*self.query_pairs(), *((k, v) for k, v in extra.items() if v not in ("", None))])

    def conditions(self) -> list[Any]:
        """SQL conditions on items (score and label are copied from the verdict)."""
        where: list[Any] = []
        if self.label:
            where.append(Item.label == self.label)
        if self.reviewed:
            decided = exists().where(Decision.item_id == Item.id, STANDING)
            where.append(decided if self.reviewed == "yes" else ~decided)
        if self.error_code == "any":
            where.append(Item.status == "error")
        elif self.error_code:
            where.extend([Item.status == "error", Item.error_code == self.error_code])
        if self.score_min is not None:
            where.append(Item.score >= self.score_min)
        if self.score_max is not None:
            where.append(Item.score <= self.score_max)
        if self.decided:
            where.append(exists().where(_latest_decision(), _decided_as(self.decided)))
        if self.reviewer:
            where.append(exists().where(Decision.item_id == Item.id, Decision.reviewer == self.reviewer, STANDING))
        if self.name:
            escaped = self.name.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(func.lower(Item.uri).like(f"%{escaped}%", escape="\\"))
        return where


def _latest_decision() -> Any:
    """The item's latest standing decision: one no later standing decision follows (an anti-join the database can
    hash over the job's decisions, where a per-item max() subquery ran once for each of the job's items)."""
    later = aliased(Decision)
    superseded = exists().where(later.item_id == Decision.item_id, later.id > Decision.id, later.retracted_at.is_(None))
    return and_(Decision.item_id == Item.id, STANDING, ~superseded)


def _decided_as(decided: str) -> Any:
    if decided == "disagree":
        return and_(Decision.decision.in_(LABELS), Item.label.in_(LABELS), Decision.decision != Item.label)
    return Decision.decision == decided


def _score(params: Any, name: str) -> float | None:
    raw = params.get(name, "")
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise FilterError(f"{name} must be a score between 0 and 1, not {raw!r}") from None
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise FilterError(f"{name} must be a score between 0 and 1, not {raw!r}")
    return value


QUEUE_COLUMNS = (Item.id.label("item_id"), Item.uri, Item.kind, Item.status, Item.error_code, Item.error_message,
                 Item.sha256, Item.score, Item.label)  # fmt: skip
ORDER = (Item.score.desc().nulls_last(), Item.id)  # walks ix_items_job_id_score (migration 0005)


def _base(job_id: int, filters: QueueFilter) -> Any:
    return select(*QUEUE_COLUMNS).where(Item.job_id == job_id, *filters.conditions())


@dataclass
class QueuePage:
    """One page of a job's queue."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    decisions: dict[int, dict[str, Any]] = field(default_factory=dict)


def queue_page(
    session: Session, job_id: int, filters: QueueFilter, page: int = 1, per_page: int = PER_PAGE
) -> QueuePage:
    """The job's items matching the filters in review order: flagged first by score, unscored last."""
    get_job(session, job_id)
    total = session.scalar(select(func.count()).where(Item.job_id == job_id, *filters.conditions())) or 0
    pages = max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    query = _base(job_id, filters).order_by(*ORDER).limit(per_page).offset((page - 1) * per_page)
    rows = [dict(row._mapping) for row in session.execute(query)]
    return QueuePage(rows, total, page, pages, latest_decisions(session, [row["item_id"] for row in rows]))


def latest_decisions(session: Session, item_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Each listed item's most recent decision (decision, reviewer, when, id)."""
    latest: dict[int, dict[str, Any]] = {}
    query = select(Decision).where(Decision.item_id.in_(item_ids), STANDING).order_by(Decision.id)
    for row in session.scalars(query) if item_ids else []:
        latest[row.item_id] = {"id": row.id, "decision": row.decision, "reviewer": row.reviewer,
                               "created_at": row.created_at}  # fmt: skip
    return latest


def _after(score: float | None, item_id: int) -> Any:
    """Items that come after (score, id) in review order."""
    if score is None:
        return and_(Item.score.is_(None), Item.id > item_id)
    return or_(Item.score < score, and_(Item.score == score, Item.id > item_id), Item.score.is_(None))


def _before(score: float | None, item_id: int) -> Any:
    """Items that come before (score, id) in review order."""
    if score is None:
        return or_(Item.score.is_not(None), Item.id < item_id)
    return and_(Item.score.is_not(None), or_(Item.score > score, and_(Item.score == score, Item.id < item_id)))


def _item_score(session: Session, item_id: int) -> float | None:
    return session.scalar(select(Item.score).where(Item.id == item_id))


def neighbour(session: Session, job_id: int, filters: QueueFilter, item_id: int, forward: bool = True) -> int | None:
    """The item after (or before) `item_id` in the filtered queue, or None at its end."""
    score = _item_score(session, item_id)
    where = _after(score, item_id) if forward else _before(score, item_id)
    order = ORDER if forward else (Item.score.asc().nulls_first(), Item.id.desc())
    page = _base(job_id, filters).where(where).order_by(*order).limit(1).subquery()
    return session.scalar(select(page.c.item_id))


HOLD_SECONDS = 120  # an opened item is not handed to another reviewer for this long


def hold(session: Session, item_id: int, holder: str, seconds: float = HOLD_SECONDS) -> None:
    """Note that `holder` has the item open now (any serve process sees it); forget holds long expired."""
    now = utcnow()
    session.execute(delete(Hold).where(Hold.held_until < now - timedelta(seconds=seconds)))
    values = {"item_id": item_id, "holder": holder, "held_until": now + timedelta(seconds=seconds)}
    upsert = dialect_insert(session, Hold).values(**values)
    update_to = {"holder": upsert.excluded.holder, "held_until": upsert.excluded.held_until}
    session.execute(upsert.on_conflict_do_update(index_elements=["item_id"], set_=update_to))


def held_by_others(session: Session, holder: str) -> frozenset[int]:
    """Items another holder has open and whose hold has not expired."""
    query = select(Hold.item_id).where(Hold.holder != holder, Hold.held_until > utcnow())
    return frozenset(session.scalars(query))


def next_unreviewed(
    session: Session, job_id: int, filters: QueueFilter, item_id: int | None = None, busy: frozenset[int] = frozenset()
) -> int | None:
    """The first item with no decision after `item_id` (or from the start) in the filtered queue, not in `busy`."""
    unreviewed = ~exists().where(Decision.item_id == Item.id, STANDING)
    query = _base(job_id, filters).where(unreviewed)
    if busy:
        query = query.where(Item.id.not_in(sorted(busy)))
    if item_id is not None:
        query = query.where(_after(_item_score(session, item_id), item_id))
    return session.scalar(select(query.order_by(*ORDER).limit(1).subquery().c.item_id))


def item_detail(session: Session, item_id: int) -> dict[str, Any] | None:
    """Everything the item page shows: the item, its verdict and faces, and every decision (oldest first)."""
    item = row_by_id(session, Item, item_id)
    if item is None:
        return None
    verdict = session.get(Verdict, item.verdict_id) if item.verdict_id else None
    faces = (
        session.scalars(select(Face).where(Face.verdict_id == verdict.id).order_by(Face.rank)).all() if verdict else []
    )
    history = session.scalars(select(Decision).where(Decision.item_id == item_id).order_by(Decision.id)).all()
    explained = verdict_sentences(verdict, list(faces)) if verdict else []
    return {"item": item, "verdict": verdict, "faces": list(faces), "history": list(history), "explained": explained}


BORDERLINE = 0.05  # a score this close to the threshold, either side, is called borderline


def verdict_sentences(verdict: Verdict, faces: list[Face]) -> list[str]:
    """The verdict in plain words: which view drove it (each view is scored against the same threshold and the
    image takes the most suspicious), and whether it is borderline."""
    threshold = verdict.threshold
    wholes = _whole_image_views(verdict)
    whole_over = [f"{name} ({score:.2f})" for name, score in wholes if score >= threshold]
    faces_over = [f"face {face.rank + 1} ({face.score:.2f})" for face in faces if face.score >= threshold]
    face_words = ", ".join(f"face {face.rank + 1}: {face.score:.2f}" for face in faces)
    whole_words = " and ".join(f"{name} ({score:.2f})" for name, score in wholes) or "the whole image"
    if verdict.label == "fake" and whole_over and faces_over:
        named = f"{' and '.join(whole_over)} and by {', '.join(faces_over)}"
        sentences = [f"Flagged by {named}: both look generated or edited."]
    elif verdict.label == "fake" and whole_over:
        found = f"no face alone does ({face_words})" if faces else "no face was found to judge alone"
        sentences = [f"Flagged by {' and '.join(whole_over)}: it looks generated or edited; {found}."]
    elif verdict.label == "fake" and faces_over:
        sentences = [f"Flagged by {', '.join(faces_over)}: the face looks generated or swapped; {whole_words} "
                     f"{'do' if len(wholes) > 1 else 'does'} not."]  # fmt: skip
    elif verdict.label == "fake":
        sentences = [f"Flagged: its score {verdict.score:.2f} is at or over the threshold ({threshold:.2f})."]
    else:
        faces_words = f"nor any face ({face_words})" if faces else "and no face was found"
        verb = "are" if len(wholes) > 1 else "is"
        sentences = [f"Not flagged: {whole_words} {verb} under the threshold ({threshold:.2f}), {faces_words}."]
    if abs(verdict.score - threshold) < BORDERLINE:
        side = "over" if verdict.score >= threshold else "under"
        sentences.append(f"Borderline: {abs(verdict.score - threshold):.3f} {side} the threshold; look closely.")
    return sentences


def _whole_image_views(verdict: Verdict) -> list[tuple[str, float]]:
    """The whole image's views with their scores: the image scaled down and, where scored, its native patch."""
    views = [("whole", verdict.whole_score), ("patch", verdict.patch_score)]
    return [(f"the {VIEW_WORDS[kind]}", score) for kind, score in views if score is not None]


@dataclass
class DecisionOutcome:
    """What happened to a decision sent from a page: recorded, or refused because someone decided meanwhile."""

    recorded: bool
    latest: Decision | None


def decide(
    session: Session, item_id: int, decision: str, reviewer: str, seen: int, note: str | None = None
) -> DecisionOutcome:
    """Record a decision only if the item's latest decision is still the one the reviewer saw (`seen`, 0: none).

    The item row is locked (PostgreSQL) and the insert is conditional in one statement (SQLite), so of two
    reviewers deciding on the same view of an item, the second is told of the first instead of overwriting it.
    """
    check_decision(session, item_id, decision, reviewer, note)
    session.execute(select(Item.id).where(Item.id == item_id).with_for_update())
    latest_id = (
        select(func.coalesce(func.max(Decision.id), 0)).where(Decision.item_id == item_id, STANDING).scalar_subquery()
    )
    values = select(literal(item_id), literal(decision), literal(reviewer.strip()), literal(note), literal(utcnow()))
    statement = insert(Decision).from_select(
        ["item_id", "decision", "reviewer", "note", "created_at"], values.where(latest_id == seen)
    )
    recorded = session.execute(statement.returning(Decision.id)).scalar() is not None
    return DecisionOutcome(recorded, standing_decision(session, item_id))


@dataclass
class BulkOutcome:
    """What a decision on many items did: the items recorded, and those someone decided on meanwhile."""

    recorded: list[int] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)


BULK_LIMIT = 200  # items one bulk decision may name


def decide_many(
    sessions: Any, job_id: int, seen_by_item: dict[int, int], decision: str, reviewer: str, note: str | None = None
) -> BulkOutcome:
    """Record one decision on each of the job's items that nobody decided on since the page showed it (`seen`, as
    for one item), each in its own transaction; the rest are reported as conflicts. Items of other jobs are refused
    (ReviewError) before anything is recorded."""
    if len(seen_by_item) > BULK_LIMIT:
        raise ReviewError(f"at most {BULK_LIMIT} items at once, not {len(seen_by_item)}")
    with sessions() as session:
        known = set(session.scalars(select(Item.id).where(Item.job_id == job_id, Item.id.in_(list(seen_by_item)))))
    if stray := sorted(set(seen_by_item) - known):
        raise ReviewError(f"items {', '.join(map(str, stray[:10]))} are not in job {job_id}; nothing was recorded")
    outcome = BulkOutcome()
    for item_id, seen in sorted(seen_by_item.items()):
        with sessions.begin() as session:
            recorded = decide(session, item_id, decision, reviewer, seen, note).recorded
        (outcome.recorded if recorded else outcome.conflicts).append(item_id)
    return outcome


def standing_decision(session: Session, item_id: int) -> Decision | None:
    """The item's decision that counts: its latest one not retracted."""
    query = select(Decision).where(Decision.item_id == item_id, STANDING).order_by(Decision.id.desc()).limit(1)
    return session.scalars(query).first()


def last_standing_by(session: Session, job_id: int, reviewer: str) -> Decision | None:
    """The reviewer's latest decision in the job that still counts, or None."""
    query = (
        select(Decision).join(Item, Item.id == Decision.item_id)
        .where(Item.job_id == job_id, Decision.reviewer == reviewer.strip(), STANDING)
        .order_by(Decision.id.desc()).limit(1)
    )  # fmt: skip
    return session.scalars(query).first()


def retract(session: Session, decision_id: int, reviewer: str) -> Decision:
    """Undo a reviewer's own decision: it stays in the history, marked retracted, and stops counting; the item's
    decision is again the one before it. Refused (ReviewError) for another reviewer's decision, one already
    retracted, or one someone has decided after (undoing it would silently undo theirs)."""
    row = session.get(Decision, decision_id, with_for_update=True)
    if row is None or row.reviewer != reviewer.strip():
        raise ReviewError(f"decision {decision_id} is not one of yours: only your own decisions can be undone")
    if row.retracted_at is not None:
        raise ReviewError(f"decision {decision_id} was already undone")
    session.execute(select(Item.id).where(Item.id == row.item_id).with_for_update())
    standing = standing_decision(session, row.item_id)
    if standing is not None and standing.id != row.id:
        raise ReviewError(
            f"{standing.reviewer} decided {standing.decision} on this item after you: your decision was not undone"
        )
    row.retracted_at, row.retracted_by = utcnow(), reviewer.strip()
    return row


__all__ = ["DECISIONS", "DecisionOutcome", "FilterError", "QueueFilter", "ReviewError", "decide", "item_detail",
           "decide_many", "last_standing_by", "neighbour", "next_unreviewed", "queue_page", "retract",
           "standing_decision"]  # fmt: skip
