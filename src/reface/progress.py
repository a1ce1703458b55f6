"""Progress reporting: a tqdm bar on a terminal, silent with --quiet or when not a TTY."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def track(items: Iterable[T], *, total: int | None = None, desc: str = "", quiet: bool = False) -> Iterator[T]:
    """Iterate with a progress bar (tqdm) when enabled."""
    if not enabled(quiet):
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)


class Steps:
    """Named steps of one job, shown as a bar that advances per step."""

    def __init__(self, total: int, desc: str, quiet: bool = False):
        self._bar = None
        if enabled(quiet):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)

    def __call__(self, step: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(step)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
