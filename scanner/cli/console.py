"""Shared terminal helpers: an error console and a progress bar factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from scanner.safe_text import printable

err_console = Console(stderr=True)


def echo(text: object = "", nl: bool = True) -> None:
    """typer.echo for text that may carry names from users, files or URLs."""
    typer.echo(printable(text), nl=nl)


def say_error(message: object) -> None:
    """Print to stderr with no Rich markup read from the text and no control characters."""
    err_console.print(escape(printable(message)), highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error to stderr and exit with `code` (1; 2 for bad usage); the message is never read as markup."""
    err_console.print(f"[bold red]error:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=code)


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Yield a factory of progress tasks (images/s and ETA); silent when stderr is not a terminal."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
    )

    def new_task(description: str, total: int) -> Callable[[int], None]:
        task_id = progress.add_task(description, total=total, rate="")

        def advance(count: int) -> None:
            progress.advance(task_id, count)
            speed = progress.tasks[task_id].speed
            progress.update(task_id, rate=f"{speed:.0f} img/s" if speed else "")

        return advance

    with progress:
        yield new_task
