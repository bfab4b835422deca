"""Progress on long work (tqdm, on stderr): per item where there are items, and an elapsed-time
line for one long step that reports nothing itself (Yosys writing a large Verilog file).

Shown only when asked for (``enabled``: the CLI asks unless ``--quiet``) and stderr is a
terminal, so logs, pipes and tests get no bar characters.
"""

from contextlib import contextmanager
import sys
import threading

from tqdm.auto import tqdm

__all__ = ["bar", "step"]


def _disable(enabled):
    # None: tqdm shows the bar only when its file (stderr) is a terminal.
    return None if enabled else True


def bar(iterable=None, *, desc, total=None, unit="it", enabled=False):
    """A tqdm bar over ``iterable`` (or a manual one with ``total``), on stderr, removed when done."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=_disable(enabled), leave=False,
                file=sys.stderr, dynamic_ncols=True)


@contextmanager
def step(desc, *, enabled=False, interval=1.0):
    """An elapsed-time line (``desc: 12s``) refreshed every ``interval`` seconds while the body runs."""
    with tqdm(desc=desc, total=None, disable=_disable(enabled), leave=False, file=sys.stderr,
              bar_format="{desc}: {elapsed}", dynamic_ncols=True) as t:
        if t.disable:
            yield
            return
        done = threading.Event()

        def tick():
            while not done.wait(interval):
                t.refresh()

        thread = threading.Thread(target=tick, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
