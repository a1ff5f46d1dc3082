"""Progress on a terminal: tqdm bars on stderr for work that lasts more than ``DELAY``
seconds, nothing otherwise (stderr not a terminal, ``--quiet``, quick work)."""

from __future__ import annotations

import sys
from typing import Any

DELAY = 2.0  # seconds before a bar appears: quick steps never draw one


def bar(total: float | None, desc: str, enabled: bool = True, **options: Any):
    """A tqdm bar on stderr that shows itself only on a terminal, after ``DELAY`` seconds,
    and disappears when closed. ``options`` go to tqdm (``unit``, ``unit_scale``, ...)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        file=sys.stderr,
        disable=None if enabled else True,  # None: off when stderr is not a terminal
        delay=DELAY,
        leave=False,
        dynamic_ncols=True,
        **options,
    )


class PhaseBars:
    """A ``progress(phase, done, total)`` callback (``converter.conversion.convert``) drawn
    as one bar per phase; ``close()`` when the work ends, failed or not."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bars: dict[str, Any] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.bars:
            options = {"unit": "B", "unit_scale": True, "unit_divisor": 1024} if total > 1 else {}
            self.bars[phase] = bar(total, phase, self.enabled, **options)
        current = self.bars[phase]
        current.update(done - current.n)

    def close(self) -> None:
        for current in self.bars.values():
            current.close()
