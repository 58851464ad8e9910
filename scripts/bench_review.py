"""Server time of the review app's pages on a 100,000-item job (goal: queue, grid and item pages in <= 300 ms).

    .venv/bin/python scripts/bench_review.py [--items 100000] [--database-url postgresql+psycopg://...]

Builds a job of synthetic rows in a fresh database (SQLite file by default; a PostgreSQL URL must name an
empty database), then requests each page through the real application in-process (Starlette's test client:
routing, middleware, queries, templates; no network) and prints the median and worst of 7 requests per page.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, text
from starlette.testclient import TestClient

from scanner.db import Decision, Item, Job, Verdict, make_engine, upgrade, uri_key
from scanner.moderation.serve import ServeConfig, create_app
from scanner.pipeline.submit import open_database
from scanner.settings import Settings

CHUNK = 10_000


def build_job(url: str, items: int, seed: int = 1) -> int:
    """One finished job of `items` rows: 5% flagged, 1% errors, a fifth reviewed."""
    rng = random.Random(seed)
    engine = make_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        job_id = connection.execute(
            insert(Job).returning(Job.id),
            [{"sources": ["/bench"], "sources_key": f"bench-{seed}", "model_version": "bench-model", "threshold": 0.9,
              "mode": "embedded", "status": "finished", "created_at": now, "finished_at": now, "items_total": items}],
        ).scalar_one()  # fmt: skip
        for start in range(0, items, CHUNK):
            count = min(CHUNK, items - start)
            scores = [rng.random() ** 8 if rng.random() > 0.05 else 0.9 + rng.random() * 0.1 for _ in range(count)]
            verdicts = [{"sha256": f"{job_id:08x}{start + i:056x}", "model_version": "bench-model", "score": s,
                         "label": "fake" if s >= 0.9 else "real", "threshold": 0.9, "created_at": now}
                        for i, s in enumerate(scores)]  # fmt: skip
            ids = connection.execute(insert(Verdict).returning(Verdict.id, sort_by_parameter_order=True), verdicts)
            rows = []
            for i, verdict_id in enumerate(ids.scalars()):
                error = rng.random() < 0.01
                uri = f"/bench/{start + i:06d}.jpg"
                rows.append({"job_id": job_id, "uri": uri, "uri_key": uri_key(uri), "kind": "file",
                             "status": "error" if error else "done", "error_code": "decode_error" if error else None,
                             "sha256": None if error else verdicts[i]["sha256"], "size_bytes": 50_000,
                             "verdict_id": None if error else verdict_id,
                             "score": None if error else verdicts[i]["score"],
                             "label": None if error else verdicts[i]["label"],
                             "worker": "bench", "scanned_at": now})  # fmt: skip
            item_ids = connection.execute(insert(Item).returning(Item.id, sort_by_parameter_order=True), rows)
            decided = [{"item_id": item_id, "decision": rng.choice(("fake", "real", "unsure")), "reviewer": "bench",
                        "created_at": now} for item_id in item_ids.scalars() if rng.random() < 0.2]  # fmt: skip
            connection.execute(insert(Decision), decided)
    if engine.dialect.name == "postgresql":  # as autovacuum does within a minute of a job's inserts
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))
    engine.dispose()
    return int(job_id)


def timed(client: TestClient, path: str, repeats: int = 7) -> tuple[float, float]:
    """(median, worst) milliseconds of GET path."""
    client.get(path)  # warm caches and the template
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return statistics.median(times), max(times)


def main() -> None:
    """Build the job, time the pages, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-review-"))
    url = args.database_url or f"sqlite:///{folder / 'review.db'}"
    upgrade(url)
    started = time.perf_counter()
    job_id = build_job(url, args.items)
    print(f"built job {job_id}: {args.items} items in {time.perf_counter() - started:.1f} s ({url.split(':')[0]})")
    settings = Settings.from_env().with_overrides(database_url=url)
    app = create_app(settings, open_database(settings), ServeConfig(heatmaps=False), folder / "cache")
    client = TestClient(app, base_url="http://127.0.0.1:8800")  # the host names scanner serve answers to
    middle = args.items // 2 // 50
    pages = {
        "queue, page 1": f"/jobs/{job_id}",
        "queue, flagged only": f"/jobs/{job_id}?label=fake",
        "queue, flagged and unreviewed": f"/jobs/{job_id}?label=fake&reviewed=no",
        f"queue, page {middle}": f"/jobs/{job_id}?page={middle}",
        "queue, score 0.2-0.5": f"/jobs/{job_id}?min=0.2&max=0.5",
        "queue, errors": f"/jobs/{job_id}?error=decode_error",
        "queue, decided unsure": f"/jobs/{job_id}?decided=unsure",
        "queue, reviewer disagrees": f"/jobs/{job_id}?decided=disagree",
        "grid, page 1": f"/jobs/{job_id}/grid",
        "grid, flagged and unreviewed": f"/jobs/{job_id}/grid?label=fake&reviewed=no",
        f"grid, page {args.items // 2 // 48}": f"/jobs/{job_id}/grid?page={args.items // 2 // 48}",
        "next unreviewed (redirect)": f"/jobs/{job_id}/next?label=fake",
        "item page": f"/items/{args.items // 2}",
        "jobs page": "/",
    }
    print("| page | median ms | worst ms |\n| --- | ---: | ---: |")
    for name, path in pages.items():
        median, worst = timed(client, path)
        print(f"| {name} | {median:.0f} | {worst:.0f} |")


if __name__ == "__main__":
    main()
