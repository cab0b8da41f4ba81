"""Feedback on long work: one line per step with the time, and progress bars only on a terminal.

Why one helper: a command that works for 20 s without a word looks hung, and a tqdm bar written to
a log file is kilobytes of carriage-return redraws. So every long step goes through here:
:func:`step` prints ``[  12.3 s] fit ridge_fp on 1,500 compounds`` when a step starts (the clock
runs from :func:`set_enabled`, so the gaps between lines are each step's time, and :func:`finish`
prints the total); :func:`bar` is a tqdm bar when stderr is a terminal and otherwise a few plain
lines (one at the start, at most one every :data:`LINE_INTERVAL_S` seconds, one at the end with
the time). Everything goes to stderr, so stdout stays the command's result.

Step lines are off for library use and on in the CLI (:func:`set_enabled`); ``DRUGCELL_PROGRESS=0``
turns step lines and bars off everywhere.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

#: Seconds between two plain progress lines when stderr is not a terminal.
LINE_INTERVAL_S = 10.0
_ENV = "DRUGCELL_PROGRESS"
_state: dict[str, Any] = {"on": False, "t0": time.perf_counter(), "steps": 0}


def set_enabled(on: bool) -> None:
    """Turn step lines on (the CLI does, at its start: the clock starts here) or off (the library default)."""
    _state.update(on=bool(on), t0=time.perf_counter(), steps=0)


def _env_off() -> bool:
    return os.environ.get(_ENV, "").strip().lower() in ("0", "false", "no", "off")


def enabled() -> bool:
    """Whether step lines are printed."""
    return _state["on"] and not _env_off()


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced by an object without isatty
        return False


def fmt_seconds(seconds: float) -> str:
    """``4.2 s``, ``3.1 min``, ``1.2 h``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def note(message: str) -> None:
    """One line on stderr (when step lines are on)."""
    if enabled():
        print(message, file=sys.stderr, flush=True)


def _clock() -> str:
    return f"[{time.perf_counter() - _state['t0']:7.1f} s]"


def step(what: str) -> None:
    """Say that a step starts: ``[  12.3 s] what`` (seconds since the command started)."""
    if enabled():
        _state["steps"] += 1
        note(f"{_clock()} {what}")


def finish() -> None:
    """The closing line with the total time, after a command that printed steps."""
    if enabled() and _state["steps"]:
        note(f"{_clock()} done")
        _state["steps"] = 0


class LineProgress:
    """A tqdm stand-in that writes plain lines: one at the start, at most one every ``interval``
    seconds, one at the end. Supports what drugcell uses of tqdm (iteration, ``update``,
    ``set_postfix_str``, ``close``, the context manager)."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", interval: float = LINE_INTERVAL_S, stream: TextIO | None = None) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.stream = stream
        self.n = 0
        self.postfix = ""
        self.closed = False
        self.t0 = self._last = time.perf_counter()
        self._write(f"{self._done()} ...")

    def _write(self, text: str) -> None:
        print(f"{self.desc}: {text}", file=self.stream or sys.stderr, flush=True)

    def _done(self) -> str:
        if self.total:
            return f"{self.n:,}/{self.total:,} {self.unit} ({100 * self.n / self.total:.0f}%)"
        return f"{self.n:,} {self.unit}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self._last >= self.interval and not self.closed:
            self._last = now
            elapsed = now - self.t0
            left = ""
            if self.total and 0 < self.n < self.total:
                left = f", about {fmt_seconds(elapsed * (self.total - self.n) / self.n)} left"
            extra = f" [{self.postfix}]" if self.postfix else ""
            self._write(f"{self._done()}{extra}, {fmt_seconds(elapsed)}{left}")

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(f"{self._done()} in {fmt_seconds(time.perf_counter() - self.t0)}")

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LineProgress without an iterable cannot be iterated")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Silent:
    """No output at all (a disabled bar)."""

    def __init__(self, iterable: Iterable[Any] | None = None, **_: Any) -> None:
        self.iterable = iterable
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable if self.iterable is not None else ())

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
        disable: bool | None = False, lines: bool = True) -> Any:
    """A progress display: tqdm on a terminal, plain lines elsewhere (``lines=False``: nothing
    elsewhere), nothing with ``disable=True``. ``disable=None`` (tqdm's "only on a terminal")
    shows nothing off a terminal. ``DRUGCELL_PROGRESS=0`` disables every bar."""
    if disable or _env_off():
        return _Silent(iterable)
    if is_terminal():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit)
    if disable is None or not lines:
        return _Silent(iterable)
    return LineProgress(iterable, total=total, desc=desc, unit=unit)
