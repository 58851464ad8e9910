"""`scanner adapt` end to end: scan N fakes and N reals, review them all, adapt; print the time and the table.

    .venv/bin/python scripts/bench_adapt.py --fakes ../shared/data/generated_faces \
        --reals ../shared/data/unsplash_people_real --per-class 100

The scan runs first on a fresh SQLite database with the configured model (SCANNER_MODEL); every item gets the
decision its folder says (fake/ or real/); then `run_adapt`, the function `scanner adapt` calls, is timed: reading
the reviewed bytes, features, five folds and the final fit, the check set, the guardrails, registering.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from scanner.adapt import run_adapt
from scanner.db import Item, make_engine, session_factory
from scanner.moderation.review import add_decision
from scanner.pipeline.submit import submit
from scanner.settings import Settings


def main() -> None:
    """Scan, decide, adapt; print seconds per stage and the evaluation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fakes", type=Path, required=True)
    parser.add_argument("--reals", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args()
    rng = random.Random(0)
    fakes = rng.sample(sorted((args.fakes / "fake").glob("*.jpg")), args.per_class)
    reals = rng.sample(sorted((args.reals / "real").glob("*.jpg")), args.per_class)
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.from_env().with_overrides(
            database_url=f"sqlite:///{folder}/bench.db", broker_url=None, cache_dir=Path(folder) / "cache"
        )
        started = time.perf_counter()
        job_id = submit(settings, [str(p) for p in fakes + reals], wait=True).summary["job_id"]
        scanned = time.perf_counter() - started
        sessions = session_factory(make_engine(settings.database_url))
        with sessions() as session:
            for item_id, uri in session.execute(select(Item.id, Item.uri).where(Item.job_id == job_id)).all():
                add_decision(session, item_id, "fake" if "/fake/" in uri else "real", "bench")
            session.commit()
        started = time.perf_counter()
        result = run_adapt(settings, [job_id], "bench-adapted", created_by="bench")
        adapted = time.perf_counter() - started
    print(f"scan of {2 * args.per_class} images: {scanned:.1f} s; scanner adapt on {2 * args.per_class} decisions: "
          f"{adapted:.1f} s; registered: {result.registered}")  # fmt: skip
    for row in result.to_dict()["evaluation"]:
        auc = "-" if row["auc"] is None else f"{row['auc']:.3f}"
        print(f"  {row['model']:<8} {row['set'][:26]:<26} AUC {auc:>5}  caught {row['caught'] or 0:6.1%}  "
              f"flagged {row['flagged'] or 0:6.1%}")  # fmt: skip
    for failure in result.evaluation.failures:
        print(f"  refused: {failure}")


if __name__ == "__main__":
    main()
