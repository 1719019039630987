"""Batches over a list of inputs, with a rich progress bar on stderr for large inputs.

Why automatic: a progress bar for 3 captions is noise, and for 100,000 images it is the only sign
of life. `progress=None` shows one when there are at least `AUTO_PROGRESS_MIN` items and stderr is a
terminal; True and False force it on or off.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from cmhash.validators import positive_int

AUTO_PROGRESS_MIN = 256


def check_batch_size(batch_size: int) -> int:
    return positive_int(batch_size, "batch_size")


def show_progress(progress: bool | None, n: int) -> bool:
    if progress is None:
        return n >= AUTO_PROGRESS_MIN and sys.stderr.isatty()
    return bool(progress)


@contextmanager
def progress_bar(total: int, description: str, enabled: bool) -> Iterator:
    """A callable `advance(k)`; a rich bar on stderr when enabled, a no-op otherwise."""
    if not enabled:
        yield lambda _k: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    console = Console(stderr=True)
    # On a terminal the bar disappears when done; elsewhere (logs, CI) only its final state is written.
    with Progress(*columns, console=console, transient=console.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda k: bar.advance(task, k)


def batch_ranges(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)
