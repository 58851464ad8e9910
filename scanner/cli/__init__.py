"""The `scanner` command: each subcommand parses options and calls a plain function."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from scanner.cli import model as cli_model
from scanner.cli.console import echo, fail, progress_bar, say_error
from scanner.connect import SetupError, describe_db_error, open_database, safe_url
from scanner.settings import Settings

app = typer.Typer(help="fauxscan: find fake, manipulated and AI-generated face images.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
model_app = typer.Typer(help="Checkpoints: prepare one for release.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.command()(cli_model.train)
app.command()(cli_model.evaluate)

JobId = Annotated[int, typer.Argument(help="Job id (from `scanner submit` or `scanner jobs`).")]
# Options `submit` and `resume` share.
Wait = Annotated[bool, typer.Option(help="Wait for the job to finish (distributed mode).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
BatchSize = Annotated[int | None, typer.Option(help="Images per batch.")]
Device = Annotated[str | None, typer.Option(help="auto, cpu or cuda.")]


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment with CLI overrides; a bad value is a usage error (exit code 2)."""
    try:
        return Settings.from_env().with_overrides(**overrides)
    except ValueError as exc:
        fail(str(exc), code=2)


def _spool_from_file(source: str, settings: Settings) -> list[str]:
    """The job source standing for a --from-file list ('-': stdin), copied line by line under the cache folder;
    no source for an empty list."""
    from scanner.pipeline.jobs import spool_list
    from scanner.pipeline.sources import iter_source_list

    folder = settings.cache_dir / "lists"
    try:
        if source == "-":
            listed, count = spool_list(iter_source_list(sys.stdin.buffer), folder)
        else:
            with open(source, "rb") as handle:
                listed, count = spool_list(iter_source_list(handle), folder)
    except OSError as exc:
        if exc.filename in (source, None):
            fail(f"cannot read --from-file {source}: {exc.strerror}")
        fail(f"cannot keep a copy of --from-file {source} in {folder}: {exc.strerror} (set SCANNER_CACHE_DIR)")
    except ValueError as exc:
        fail(f"--from-file {source}: {exc}")
    return [listed] if count else []


def name_values(items: list[str]) -> dict[str, int | float]:
    """NAME=VALUE options -> a mapping; a whole number stays an int; ValueError names the item that is not one."""
    parsed: dict[str, int | float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            parsed[name.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            raise ValueError(f"expected NAME=NUMBER, not {item!r}") from None
    return parsed


@app.command()
def submit(
    paths: Annotated[list[str] | None, typer.Argument(help="Files, directories and http(s) URLs.")] = None,
    from_file: Annotated[str | None, typer.Option(help="File with one path or URL per line ('-': stdin).")] = None,
    wait: Wait = True,
    as_json: AsJson = False,
    batch_size: BatchSize = None,
    model: Annotated[str | None, typer.Option(help="A model name from `scanner models`, or a checkpoint path.")] = None,
    device: Device = None,
) -> None:
    """Scan images: record a job, scan it, print a summary."""
    settings = load_settings(batch_size=batch_size, model_path=model, device=device)
    arguments = list(paths or []) + (_spool_from_file(from_file, settings) if from_file else [])
    if not arguments:
        fail("nothing to scan: give paths or URLs, or --from-file")
    from scanner.pipeline.submit import submit as run_submit

    _run_and_print(settings, lambda progress: run_submit(settings, arguments, wait, progress), as_json)


@app.command()
def resume(
    job_id: JobId,
    wait: Wait = True,
    as_json: AsJson = False,
    batch_size: BatchSize = None,
    model: Annotated[str | None, typer.Option(help="The job's model, if not the default.")] = None,
    device: Device = None,
) -> None:
    """Carry on with an unfinished job by id (after Ctrl-C, a crash or a dead worker)."""
    from scanner.pipeline.submit import resume as run_resume

    settings = load_settings(batch_size=batch_size, model_path=model, device=device)
    _run_and_print(settings, lambda progress: run_resume(settings, job_id, wait, progress), as_json)


def _run_and_print(settings: Settings, run: Callable[[Any], Any], as_json: bool) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with progress_bar() as new_task:
            result = run(new_task)
    except SetupError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(
            f"database error during the scan ({describe_db_error(exc, settings.database_url)}); "
            "finished batches are saved: run the same command again (or `scanner resume JOB`) to resume"
        )
    except KeyboardInterrupt:
        fail("interrupted: finished batches are saved; run the same command again (or `scanner resume JOB`)")
    summary = result.summary
    if as_json:
        typer.echo(json.dumps({k: v for k, v in summary.items() if k != "skipped_files"}))
        return
    _print_summary(summary, result.resumed)


def _print_summary(summary: dict[str, Any], resumed: bool) -> None:
    verb = "resumed" if resumed else "job"
    if not summary["finished"]:
        job_id = summary["job_id"]
        echo(f"{verb} {job_id} queued: {summary['items']} items; follow with `scanner status {job_id}`")
        return
    rate = summary.get("images_per_second")
    echo(
        f"{verb} {summary['job_id']} finished: {summary['done']} scanned, {summary['flagged']} flagged, "
        f"{summary['errors']} errors, {summary['skipped']} skipped, {summary['elapsed_seconds']:.1f} s"
        + (f", {rate:.1f} images/s" if rate else "")
    )
    for code, count in summary["errors_by_code"].items():
        echo(f"  error {code}: {count}")
    echo(f"model {summary['model_version']}, threshold {summary['threshold']:.4f}")
    if summary["flagged"]:
        echo(f"flagged items: scanner report {summary['job_id']} --flagged-only")


def _sessions(settings: Settings) -> Any:
    try:
        return open_database(settings)
    except SetupError as exc:
        fail(str(exc))


@app.command()
def status(job_id: JobId, as_json: AsJson = False) -> None:
    """Progress, counts, errors, skipped files and per-worker throughput of a job."""
    from scanner.moderation.reports import JobNotFound, job_status

    with _sessions(load_settings())() as session:
        try:
            data = job_status(session, job_id)
        except JobNotFound as exc:
            fail(str(exc))
    if as_json:
        typer.echo(json.dumps(data))
        return
    state = "finished" if data["finished"] else f"running ({data['queued']} queued)"
    echo(
        f"job {job_id}: {state}; {data['items']} items, {data['done']} done, {data['flagged']} flagged, "
        f"{data['errors']} errors, {data['skipped']} skipped"
    )
    for code, count in data["errors_by_code"].items():
        echo(f"  error {code}: {count}")
    for skipped in data["skipped_files"]:
        echo(f"  skipped ({skipped['reason']}): {skipped['path']}")
    for worker in data["workers"]:
        rate = worker["images_per_second"]
        echo(f"  worker {worker['worker']}: {worker['items']} items" + (f", {rate:.1f} images/s" if rate else ""))


@app.command()
def jobs(limit: Annotated[int, typer.Option(min=1, max=10**6, help="How many recent jobs.")] = 20) -> None:
    """List recent jobs."""
    from scanner.moderation.reports import recent_jobs

    with _sessions(load_settings())() as session:
        for job in recent_jobs(session, limit):
            echo(
                f"{job['job_id']:>6}  {job['created_at'][:19]}  {job['status']:9}  {job['mode']:11}  "
                f"items={job['items']} done={job['done']} flagged={job['flagged']} errors={job['errors']}"
            )


@app.command()
def report(
    job_id: JobId,
    flagged_only: Annotated[bool, typer.Option(help="Only items labelled fake.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="table, csv, json, jsonl or html.")] = "table",
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    explain: Annotated[bool, typer.Option(help="HTML: add Grad-CAM heatmaps for flagged items.")] = False,
    max_thumbnails: Annotated[int, typer.Option(help="HTML: thumbnails for at most this many items.")] = 2000,
    decisions: Annotated[
        bool,
        typer.Option(help="The reviewers' decisions instead: every one, oldest first, with notes, names and times."),
    ] = False,
) -> None:
    """Per-item results of a job: uri, status, score, label, threshold, model version, error."""
    from scanner.moderation import reports

    if fmt not in ("table", "csv", "json", "jsonl", "html") or (decisions and fmt == "html"):
        fail(f"unknown format {fmt!r}: use table, csv, json, jsonl" + ("" if decisions else " or html"))
    settings = load_settings()
    with _sessions(settings)() as session:
        try:
            status = reports.job_status(session, job_id)
        except reports.JobNotFound as exc:
            fail(str(exc))
        if decisions:
            history = reports.iter_decision_rows(session, job_id)
            _write_report({
                "table": lambda: reports.render_decisions_table(history),
                "csv": lambda: reports.render_csv(history, reports.DECISION_FIELDS),
                "json": lambda: reports.render_json(history, status, "decisions"),
                "jsonl": lambda: reports.render_jsonl(history),
            }[fmt](), output)  # fmt: skip
            return
        if fmt == "html":  # streamed too; the rows keep their URL passwords until written, to fetch thumbnails
            rows = reports.iter_report_rows(session, job_id, flagged_only, redact=False)
            _write_report(_html_report(settings, status, rows, explain, max_thumbnails), output)
            return
        streamed = reports.iter_report_rows(session, job_id, flagged_only)  # a chunk of rows in memory at a time
        chunks = {
            "table": lambda: reports.render_table(streamed),
            "csv": lambda: reports.render_csv(streamed),
            "json": lambda: reports.render_json(streamed, status),
            "jsonl": lambda: reports.render_jsonl(streamed),
        }[fmt]()
        _write_report(chunks, output)


def _write_report(chunks: Iterable[str], output: Path | None) -> None:
    """Stream the report's text to stdout or into `output` (written beside it, then renamed into place)."""
    if output is None:
        for chunk in chunks:
            echo(chunk, nl=False)
        return
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as handle:
            for chunk in chunks:
                handle.write(chunk)
        partial.replace(output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(f"cannot write {output}: {exc.strerror or exc}")
    say_error(f"wrote {output}")


def _html_report(
    settings: Settings, status: dict, rows: Iterable[dict], explain: bool, max_thumbnails: int
) -> Iterable[str]:
    from scanner.moderation.html_report import render_html_chunks, with_visuals

    explain_fn = None
    if explain:
        from scanner.detector.checkpoint import CheckpointError, load_model
        from scanner.model_store import checkpoint_path
        from scanner.moderation.explain import explainer

        try:
            explain_fn = explainer(load_model(checkpoint_path(settings), settings.device))
        except CheckpointError as exc:
            fail(str(exc))
    return render_html_chunks(status, with_visuals(rows, settings, explain_fn, max_thumbnails))


@app.command()
def review(
    item_id: Annotated[int | None, typer.Argument(help="Item id (from a report).")] = None,
    decision: Annotated[str | None, typer.Option(help="fake, real or unsure.")] = None,
    note: Annotated[str | None, typer.Option()] = None,
    reviewer: Annotated[str | None, typer.Option(help="Default: $USER.")] = None,
    import_csv: Annotated[
        Path | None, typer.Option("--import", help="CSV with item_id,decision[,reviewer][,note].")
    ] = None,
) -> None:
    """Record a reviewer decision on an item (never changes the model's verdict)."""
    from sqlalchemy.exc import SQLAlchemyError

    from scanner.moderation.review import ReviewError, add_decision, import_decisions

    who = reviewer or os.environ.get("USER") or "unknown"
    settings = load_settings()
    sessions = _sessions(settings)
    try:
        with sessions.begin() as session:
            if import_csv is not None:
                with import_csv.open(newline="", encoding="utf-8") as handle:
                    count = import_decisions(session, handle, who)
                echo(f"recorded {count} decisions from {import_csv}")
                return
            if item_id is None or decision is None:
                fail("give ITEM_ID and --decision, or --import FILE")
            add_decision(session, item_id, decision, who, note)
            echo(f"item {item_id}: {decision} by {who}")
    except (ReviewError, OSError) as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(f"the decision was not recorded: {describe_db_error(exc, settings.database_url)}")


@app.command("export-labels")
def export_labels(
    job_id: JobId,
    out: Annotated[Path, typer.Option(help="Folder to write real/ and fake/ into.")],
    overwrite: Annotated[
        bool, typer.Option(help="Replace files that already exist (links are never followed).")
    ] = False,
) -> None:
    """Write a job's reviewed images as real/ and fake/ folders that `scanner train` accepts."""
    from scanner.moderation.reports import JobNotFound
    from scanner.moderation.review import export_labels as run_export

    settings = load_settings()
    with _sessions(settings)() as session:
        try:
            result = run_export(session, settings, job_id, out, overwrite)
        except JobNotFound as exc:
            fail(str(exc))
    echo(f"wrote {result.written['real']} real and {result.written['fake']} fake images to {out}")
    for problem in result.unreadable:
        say_error(f"not exported (source unavailable): {problem}")
    for problem in result.changed:
        say_error(f"not exported (changed): {problem}")
    for path in result.existing:
        say_error(f"not exported (already exists; --overwrite to replace): {path}")
    if result.changed or result.existing:
        raise typer.Exit(code=1)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply database migrations (PostgreSQL or SQLite)."""
    from sqlalchemy.exc import SQLAlchemyError

    from scanner.db import upgrade

    settings = load_settings()
    try:
        upgrade(settings.database_url, revision)
    except SQLAlchemyError as exc:
        fail(f"migration failed on {safe_url(settings.database_url)}: {describe_db_error(exc, settings.database_url)}")
    echo(f"database {safe_url(settings.database_url)} is at {revision}")


@app.command()
def info() -> None:
    """Show the settings in effect: database, broker, model, device."""
    from scanner.detector.checkpoint import CheckpointError
    from scanner.pipeline.model import model_identity

    settings = load_settings()
    echo(f"database: {safe_url(settings.database_url)}")
    broker = safe_url(settings.broker_url) if settings.broker_url else "(none: embedded, in-process)"
    echo(f"broker:   {broker}")
    echo(f"model:    {settings.model_path}")
    try:
        version, threshold = model_identity(settings)
        echo(f"          version {version}, threshold {threshold:.4f}")
    except CheckpointError as exc:
        echo(f"          unusable: {exc}")
    echo(f"device:   {settings.device}")
    echo(f"batch:    {settings.batch_size}")


@model_app.command("export")
def model_export(
    source: Annotated[Path, typer.Argument(help="Checkpoint written by `scanner train`.")],
    target: Annotated[Path, typer.Argument(help="Where to write the release copy.")],
    face_detect_side: Annotated[
        int | None, typer.Option(help="Search faces on a copy this wide (speed vs recall; changes the version).")
    ] = None,
) -> None:
    """Write a release copy of a checkpoint: the same model, without the optimizer state."""
    from scanner.detector.checkpoint import CheckpointError, strip_for_release

    try:
        version = strip_for_release(source, target, face_detect_side)
    except CheckpointError as exc:
        fail(str(exc))
    echo(f"wrote {target} ({version}, {target.stat().st_size / 1e6:.1f} MB)")


@model_app.command("calibrate")
def model_calibrate(
    source: Annotated[Path, typer.Argument(help="A multi-view checkpoint (views faces or faces+patch).")],
    target: Annotated[Path, typer.Argument(help="Where to write the calibrated copy (a new model version).")],
    data_dirs: Annotated[list[Path], typer.Argument(help="The folders it was trained on (its validation split).")],
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 1,
    mirror: Annotated[
        list[str] | None,
        typer.Option(
            help="View kind (whole, patch, face) also scored as its mirror image, the logits averaged; repeat for "
            "more, 'none' for no mirroring; default: keep the source's."
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="float32 or bfloat16 (faster where the device has bf16 kernels, slightly different scores): the "
            "number format the network runs in, here and in the scanner; default: keep the source's."
        ),
    ] = None,
    patch_min_side: Annotated[
        int | None,
        typer.Option(
            help="faces+patch models: score the native patch only on images whose shorter side exceeds this many "
            "pixels (0: on every image); default: keep the source's."
        ),
    ] = None,
    mirror_margin: Annotated[
        float | None,
        typer.Option(
            help="Score a view mirrored only when its plain score is within this many logits of the threshold "
            "(faster; 0: every view of a mirrored kind); default: keep the source's."
        ),
    ] = None,
    trim_page: Annotated[
        bool | None,
        typer.Option(
            help="Score the photo inside a flat page (a screenshot of a post, a letterboxed or padded image) instead "
            "of the page; default: keep the source's."
        ),
    ] = None,
    turn_faces: Annotated[
        bool | None,
        typer.Option(
            help="In an image with no upright face, look for faces on their side and score the image turned "
            "to set them upright; default: keep the source's."
        ),
    ] = None,
    page_setting: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=VALUE: change one setting of the page search (tolerance, flat_side_share, straight_share, "
            "min_photo_share, min_photo_side, min_trim_share, second_photo_share, search_side); repeat for more; "
            "implies --trim-page."
        ),
    ] = None,
    turn: Annotated[
        list[int] | None,
        typer.Option(
            help="Degrees counter-clockwise (90, 180, 270) to search for faces when none is upright; repeat for "
            "more; implies --turn-faces (whose default is 90 and 270)."
        ),
    ] = None,
    half_turn_check: Annotated[
        str | None,
        typer.Option(
            help="BELOW[,MARGIN]: where the surest upright face's cascade confidence is under BELOW, search the "
            "image upside down too and score it turned over where that face is surer by more than MARGIN (default "
            "1); needs --turn 180; 'none' for no check; default: keep the source's."
        ),
    ] = None,
    keep_threshold: Annotated[
        bool,
        typer.Option(
            help="Keep the source's view offsets and threshold instead of fitting them (a search setting changed "
            "without moving the operating point); refused where the threshold rule no longer holds."
        ),
    ] = False,
) -> None:
    """Fit per-view offsets and the threshold on the checkpoint's own validation split."""
    from scanner.detector.checkpoint import CheckpointError
    from training.evaluate import calibrate_checkpoint

    try:
        kinds = None if mirror is None else tuple(kind for kind in mirror if kind != "none")
        metrics = calibrate_checkpoint(
            source, target, [str(d) for d in data_dirs], "cpu", workers=workers, mirror=kinds, precision=precision,
            patch_min_side=patch_min_side, mirror_margin=mirror_margin, trim_page=trim_page, turn_faces=turn_faces,
            page_settings=name_values(page_setting or []), turns=tuple(turn) if turn else None,
            half_turn=half_turn_check, keep_threshold=keep_threshold,
        )  # fmt: skip
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        fail(str(exc))
    offsets = ", ".join(f"{kind} {value:.3f}" for kind, value in metrics["view_offsets"].items()) or "none"
    echo(f"wrote {target} ({metrics['model_version']}): view offsets {offsets}, threshold {metrics['threshold']:.4f}")


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list.")] = False) -> None:
    """List the shipped models (name, version, input policy, speed, validation) and those made by scanner adapt."""
    from scanner.model_catalog import describe_models
    from scanner.model_store import stored_models

    rows = describe_models()
    adapted = stored_models(load_settings())
    if as_json:
        typer.echo(json.dumps(rows + [{**row, "adapted": True} for row in adapted]))
        return
    for row in rows:
        mark = " (default)" if row["default"] else ""
        echo(f"{row['name']}{mark}: {row['version']}")
        echo(f"    {row['summary']}")
        echo(f"    input: {row['input']}")
        echo(f"    speed: {row['speed_text']}")
        echo(f"    validation: {row['metrics_text']}")
    for row in adapted:
        details = row["details"]
        decisions = details.get("decisions", {})
        echo(f"{row['name']} (adapted): {row['version']}")
        echo(f"    from {row['base']} on {decisions.get('fake', 0)} fake and {decisions.get('real', 0)} real "
             f"decisions of jobs {', '.join(map(str, details.get('jobs', [])))}, by {row['created_by']} at "
             f"{row['created_at']}")  # fmt: skip
        held_out = next((r for r in details.get("evaluation", []) if r["model"] == "adapted"), None)
        if held_out:
            caught, flagged = _share(held_out["caught"]), _share(held_out["flagged"])
            echo(f"    held-out decisions: AUC {_number(held_out['auc'])}, {caught} of fakes caught, {flagged} of "
                 f"reals flagged at threshold {details['threshold']:.4f}")  # fmt: skip


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


@app.command()
def adapt(
    job: Annotated[list[int], typer.Option(help="A job whose review decisions teach the model; repeat for more.")],
    name: Annotated[str, typer.Option(help="The new model's name (then: scanner submit --model NAME).")],
    base: Annotated[
        str | None,
        typer.Option(help="The model to adapt (a name or file); default: the one the jobs were scanned with."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Learn from reviewers: a new model from the jobs' fake/real decisions, registered only if its checks hold."""
    from scanner.adapt import AdaptError, run_adapt
    from scanner.detector.checkpoint import CheckpointError

    settings = load_settings()
    try:
        with progress_bar() as new_task:
            author = os.environ.get("USER") or "unknown"
            result = run_adapt(settings, job, name, base, author, progress_factory=new_task)
    except (AdaptError, CheckpointError, SetupError, ValueError) as exc:
        fail(str(exc))
    summary = result.to_dict()
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        _print_adapt_table(summary)
    if not result.registered:
        fail(f"{name} was not registered: " + "; ".join(result.evaluation.failures))
    say_error(f"registered {name} ({result.version}): scanner submit --model {name} ...")


def _print_adapt_table(summary: dict[str, Any]) -> None:
    decisions = summary["decisions"]
    skipped = ", ".join(f"{count} {reason}" for reason, count in summary["skipped"].items()) or "none"
    echo(f"base {summary['base']}: {decisions['fake']} fake and {decisions['real']} real decisions used, "
         f"{summary['unsure_ignored']} unsure ignored, left out: {skipped}")  # fmt: skip
    echo(f"{'model':<8} {'set':<28} {'AUC':>6} {'caught':>7} {'flagged':>8} {'fakes':>6} {'reals':>6} {'threshold':>9}")
    for row in summary["evaluation"]:
        echo(f"{row['model']:<8} {row['set'][:28]:<28} {_number(row['auc']):>6} {_share(row['caught']):>7} "
             f"{_share(row['flagged']):>8} {row['fakes']:>6} {row['reals']:>6} {row['threshold']:>9.4f}")  # fmt: skip


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on; beyond loopback needs SCANNER_SERVE_TOKEN.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8800,
    reviewer: Annotated[str | None, typer.Option(help="Your name on decisions (no tokens). Default: $USER.")] = None,
    heatmaps: Annotated[bool, typer.Option(help="Grad-CAM heatmaps on item pages (loads the model once).")] = True,
) -> None:
    """Review queues in the browser: flagged first, one key per decision, over the same database."""
    from scanner.moderation.serve import ServeConfig, check_binding, check_origin, reviewer_tokens
    from scanner.moderation.serve import serve as run_serve

    if not 0 < port < 65536:
        fail(f"--port must be between 1 and 65535, not {port}", code=2)
    settings = load_settings()
    try:
        name = reviewer or os.environ.get("USER") or "reviewer"
        origin = check_origin(settings.serve_origin) if settings.serve_origin else ""
        config = ServeConfig(host, port, reviewer_tokens(settings), name, heatmaps, origin)
        check_binding(config)
    except SetupError as exc:
        fail(str(exc))
    say_error(f"reviewing {safe_url(settings.database_url)} at http://{host}:{port}/ (Ctrl-C stops)")
    run_serve(settings, _sessions(settings), config)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes (CPU); GPU workers use 1.")] = 1,
    queues: Annotated[str | None, typer.Option(help="Comma-separated queues (default: SCANNER_QUEUE).")] = None,
    pool: Annotated[str | None, typer.Option(help="prefork, solo or threads (default: solo on CUDA).")] = None,
    loglevel: Annotated[str, typer.Option()] = "info",
) -> None:
    """Start a Celery worker with the same settings (needs SCANNER_BROKER_URL)."""
    from scanner.engines.celery import exec_worker, worker_argv

    settings = load_settings()
    if not settings.broker_url:
        fail("SCANNER_BROKER_URL is not set: workers need a broker (e.g. redis://127.0.0.1:6379/0)")
    exec_worker(worker_argv(settings, concurrency, queues, pool, loglevel))


def main() -> None:
    """Console-script entry point."""
    app()
