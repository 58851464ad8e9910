"""Leased batches for the distributed engine: claim, heartbeat, finish, reap the dead, isolate poison.

The broker delivers batch ids; SQL decides who works on a batch. A worker claims a batch with a lease it renews
while scanning. When a worker dies (SIGKILL, OOM, power), its lease runs out and any process that reaps sends the
batch again, so recovery takes about one lease, whatever the broker's visibility timeout. Writes are idempotent,
so a batch delivered twice changes nothing.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, case, insert, or_, select, update

from scanner.db import Batch, utcnow

Send = Callable[[int, int], None]  # (job_id, batch_id) -> a message to the workers


@dataclass(frozen=True)
class Claim:
    """A batch this process now holds."""

    batch_id: int
    job_id: int
    item_ids: list[int]
    lost_count: int


def create_batches(session: Any, job_id: int, batches: list[list[int]]) -> list[int]:
    """Record the job's batches as queued; returns their ids in order."""
    now = utcnow()
    rows = [{"job_id": job_id, "item_ids": ids, "status": "queued", "deliveries": 0, "lost_count": 0,
             "updated_at": now} for ids in batches]  # fmt: skip
    if not rows:
        return []
    return list(session.scalars(insert(Batch).returning(Batch.id, sort_by_parameter_order=True), rows))


def _claimable(now: Any) -> Any:
    return or_(Batch.status == "queued", and_(Batch.status == "running", Batch.lease_until < now))


def claim_batch(sessions: Any, job_id: int, batch_id: int, worker: str, lease_seconds: float) -> Claim | None:
    """Take the batch if it is queued, its holder's lease ran out, its holder is a dead local process, or the
    holder is `worker` itself: a delivery retried after a transient error (the same `lease_holder`) takes its
    own lease back instead of waiting for the reaper, and is not counted as a lost worker."""
    now = utcnow()
    condition = or_(_claimable(now), and_(Batch.status == "running", Batch.claimed_by == worker))
    holder = _holder(sessions, batch_id)
    if holder is not None and holder != worker and local_process_dead(holder):
        condition = or_(condition, and_(Batch.status == "running", Batch.claimed_by == holder))
    with sessions.begin() as session:
        result = session.execute(
            update(Batch)
            .where(Batch.id == batch_id, Batch.job_id == job_id, condition)
            .values(
                status="running",
                claimed_by=worker,
                lease_until=now + timedelta(seconds=lease_seconds),
                deliveries=Batch.deliveries + 1,
                updated_at=now,
                lost_count=Batch.lost_count
                + case((and_(Batch.status == "running", Batch.claimed_by != worker), 1), else_=0),
            )  # fmt: skip
            .execution_options(synchronize_session=False)
        )
        if not result.rowcount:
            return None
        row = session.execute(select(Batch.item_ids, Batch.lost_count).where(Batch.id == batch_id)).one()
    return Claim(batch_id, job_id, list(row.item_ids), int(row.lost_count))


def claim_next(
    sessions: Any, job_id: int, worker: str, lease_seconds: float, holding: Iterable[int] = ()
) -> Claim | None:
    """Claim the job's first batch that is free (queued, its lease run out, its holder a dead local process, or
    `worker` itself from an earlier run) and not among those this run is `holding`, or None when every live batch is
    held by a live process (or none is left)."""
    held = sorted(holding)
    with sessions() as session:
        candidates = session.scalars(
            select(Batch.id)
            .where(Batch.job_id == job_id, Batch.status.in_(("queued", "running")), Batch.id.not_in(held))
            .order_by(case((Batch.status == "queued", 0), else_=1), Batch.id)
            .limit(64)
        ).all()
    for batch_id in candidates:
        if claim := claim_batch(sessions, job_id, batch_id, worker, lease_seconds):
            return claim
    return None


class LeaseKeeper:
    """Renews the leases of every batch this process holds, from one heartbeat thread, while it is entered."""

    def __init__(self, sessions: Any, worker: str, lease_seconds: float) -> None:
        self.sessions, self.worker, self.lease_seconds = sessions, worker, lease_seconds
        self.held: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="leases", daemon=True)

    def hold(self, batch_id: int) -> None:
        """Keep renewing this batch's lease."""
        with self._lock:
            self.held.add(batch_id)

    def holding(self) -> set[int]:
        """The batches held now (a copy)."""
        with self._lock:
            return set(self.held)

    def release(self, batch_id: int) -> None:
        """Stop renewing the batch's lease (it was marked done with its verdicts)."""
        with self._lock:
            self.held.discard(batch_id)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            with self._lock:
                held = sorted(self.held)
            for batch_id in held:
                try:
                    renew_lease(self.sessions, batch_id, self.worker, self.lease_seconds)
                except Exception:  # noqa: BLE001 - a missed beat only shortens the lease; the next one may succeed
                    continue

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop renewing; batches still held (the run stopped early: an error, Ctrl-C) are queued again at once."""
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            held, self.held = sorted(self.held), set()
        if held:
            try:
                with self.sessions.begin() as session:
                    session.execute(
                        update(Batch)
                        .where(Batch.id.in_(held), Batch.claimed_by == self.worker, Batch.status == "running")
                        .values(status="queued", claimed_by=None, lease_until=None, updated_at=utcnow())
                    )
            except Exception:  # noqa: BLE001 - the database is away: the leases run out by themselves
                pass


def _holder(sessions: Any, batch_id: int) -> str | None:
    with sessions() as session:
        return session.scalar(select(Batch.claimed_by).where(Batch.id == batch_id, Batch.status == "running"))


def lease_holder(worker: str, delivery: str = "") -> str:
    """Who holds a lease: the worker process (host:pid) and the delivery (a Celery task id, the same on every retry
    of one message), so a retry recognises its own lease whichever process of the worker runs it."""
    return f"{worker}#{delivery}"[:128] if delivery else worker


def local_process_dead(holder: str) -> bool:
    """True when `holder` (host:pid, maybe #delivery) names a process of this host that no longer exists."""
    host, _, pid = holder.partition("#")[0].rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def renew_lease(sessions: Any, batch_id: int, worker: str, lease_seconds: float) -> bool:
    """Extend this worker's lease; False when the batch is no longer ours."""
    now = utcnow()
    with sessions.begin() as session:
        result = session.execute(
            update(Batch)
            .where(Batch.id == batch_id, Batch.claimed_by == worker, Batch.status == "running")
            .values(lease_until=now + timedelta(seconds=lease_seconds), updated_at=now)
        )
    return bool(result.rowcount)


def finish_batch(sessions: Any, batch_id: int, status: str = "done") -> None:
    """Mark the batch finished (done, split or failed); it is never reaped again."""
    with sessions.begin() as session:
        mark_finished(session, batch_id, status)


def mark_finished(session: Any, batch_id: int, status: str = "done") -> None:
    """In an open transaction (the one recording the batch's verdicts): mark the batch finished."""
    session.execute(
        update(Batch).where(Batch.id == batch_id).values(status=status, lease_until=None, updated_at=utcnow())
    )


@contextmanager
def lease_kept(sessions: Any, batch_id: int, worker: str, lease_seconds: float) -> Iterator[None]:
    """Renew the lease every third of its length while the body runs (a heartbeat thread)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease_seconds / 3):
            try:
                renew_lease(sessions, batch_id, worker, lease_seconds)
            except Exception:  # noqa: BLE001 - a missed beat only shortens the lease; the next one may succeed
                continue

    thread = threading.Thread(target=beat, name=f"lease-{batch_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def reap_expired(
    sessions: Any, send: Send, limit: int = 100, queue_empty: Callable[[], bool] | None = None, stale: float = 60.0
) -> int:
    """Send again every running batch whose lease ran out (its worker died); returns how many were sent.

    With `queue_empty`, queued batches older than `stale` seconds are also sent again when the broker's queue
    holds no message at all: their message was taken by a worker that died before starting it.
    """
    sent = 0
    now = utcnow()
    if queue_empty is not None and queue_empty():
        cutoff = now - timedelta(seconds=stale)
        lost = and_(Batch.status == "queued", Batch.updated_at < cutoff)
        sent += _resend(sessions, send, lost, {"updated_at": now}, limit)
    expired = and_(Batch.status == "running", Batch.lease_until < now)
    requeue = {"status": "queued", "claimed_by": None, "lease_until": None, "lost_count": Batch.lost_count + 1,
               "updated_at": now}  # fmt: skip
    return sent + _resend(sessions, send, expired, requeue, limit)


def _resend(sessions: Any, send: Send, condition: Any, values: dict[str, Any], limit: int) -> int:
    """Send each batch matching `condition` again, after one conditional UPDATE per batch (so only one
    process re-sends it)."""
    with sessions() as session:
        found = session.execute(select(Batch.id, Batch.job_id).where(condition).order_by(Batch.id).limit(limit)).all()
    sent = 0
    for batch_id, job_id in found:
        with sessions.begin() as session:
            result = session.execute(update(Batch).where(Batch.id == batch_id, condition).values(**values))
        if result.rowcount:
            send(job_id, batch_id)
            sent += 1
    return sent


def split_batch(sessions: Any, claim: Claim) -> list[int]:
    """Replace a batch that keeps killing its worker by its two halves (queued); returns their ids."""
    half = len(claim.item_ids) // 2
    with sessions.begin() as session:
        ids = create_batches(session, claim.job_id, [claim.item_ids[:half], claim.item_ids[half:]])
    finish_batch(sessions, claim.batch_id, "split")
    return ids


def last_seen_workers(sessions: Any, job_id: int) -> list[dict[str, Any]]:
    """Who last held each of the job's batches, newest first (for stall messages)."""
    with sessions() as session:
        rows = session.execute(
            select(Batch.claimed_by, Batch.updated_at, Batch.status)
            .where(Batch.job_id == job_id, Batch.claimed_by.is_not(None))
            .order_by(Batch.updated_at.desc())
            .limit(10)
        ).all()
    return [
        {"worker": who.partition("#")[0], "seen": seen.isoformat() if seen else None, "batch": status}
        for who, seen, status in rows
    ]  # the process, without the delivery it was working on
