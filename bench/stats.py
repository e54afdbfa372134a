"""The benchmark tool's arithmetic, kept apart so its tests need no
process: medians, ratios, and when a drain started, finished and stalled."""

import statistics


def median(values):
    """The median of the values that are not None, or None."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    """a / b, or None when either is unknown or b is 0."""
    return None if a is None or b in (None, 0) else a / b


def fmt(v, spec):
    """`v` formatted, or "-" when it is unknown."""
    return "-" if v is None else format(v, spec)


def rate(n, start_s, end_s):
    """n per second between two instants, or None for an empty interval."""
    return None if end_s is None or start_s is None or end_s <= start_s else n / (end_s - start_s)


class DrainWatch:
    """Follows a drain from samples of busyapi's /api/stats.

    Feed it `sample(t, backlog, flushed)`. It records `first_s` (when
    `flushed` first moved past `flushed0`), `done_s` (when `target` more
    records were flushed, i.e. confirmed by MongoDB) and `end_s` (backlog 0,
    which also waits for the checkpoint). `sample` returns True once the
    backlog is 0, and raises StalledError when `flushed` has not moved for
    `stall_s` or the whole drain took longer than `timeout_s`.
    """

    def __init__(self, flushed0, target, start_s, stall_s, timeout_s):
        self.flushed0 = flushed0
        self.target = target
        self.deadline_s = start_s + timeout_s
        self.stall_s = stall_s
        self.timeout_s = timeout_s
        self.first_s = self.done_s = self.end_s = None
        self.last_flushed = None
        self.last_move_s = start_s

    def sample(self, t, backlog, flushed):
        if self.first_s is None and flushed > self.flushed0:
            self.first_s = t
        if self.done_s is None and flushed >= 0 and flushed >= self.flushed0 + self.target:
            self.done_s = t
        if backlog == 0:
            self.end_s = t
            self.first_s = self.first_s if self.first_s is not None else t
            self.done_s = self.done_s if self.done_s is not None else t
            return True
        if t > self.deadline_s:
            raise StalledError(f"backlog not drained after {self.timeout_s}s (walBacklogRecords {backlog})")
        if flushed != self.last_flushed:
            self.last_flushed = flushed
            self.last_move_s = t
        elif t - self.last_move_s > self.stall_s:
            raise StalledError(f"no delivery progress for {self.stall_s}s "
                               f"(walBacklogRecords {backlog}, flushed {flushed})")
        return False


class StalledError(Exception):
    """A drain that stopped moving or ran out of time."""
