"""How much of a job goes into one bundle, from what its tasks cost.

A bundle costs about eight AWS requests and a fraction of a second of round
trips whatever it holds, so tiny tasks travel in big bundles. But a bundle
runs on one slot, so long tasks travel in small ones, and no bundle holds
more than its fair share of the work left (the remaining work shared among
twice as many bundles as slots: guided self-scheduling). Bundles shrink
toward the end of a job, so the last results arrive together, but never
below MIN_BUNDLE_SECONDS of work.

What a task costs: a built-in ``sleep N`` costs N ms and a little more,
known from its text; a shell command costs what the job's commands have cost
so far (a running mean of their results), and before any has reported, a
guess of UNKNOWN_COMMAND_SECONDS, on the side of small bundles: a slow
command in a big bundle costs more than a quick one in a small bundle.
"""

from worker.task import check_line

#: Work below which a bundle is not cut smaller, in seconds.
MIN_BUNDLE_SECONDS = 2.0

#: Work above which a bundle is not made larger, in seconds.
MAX_BUNDLE_SECONDS = 900.0

#: What a built-in sleep costs beyond its duration (parsing, timing, its record).
SLEEP_OVERHEAD_SECONDS = 0.0002

#: What a shell command is taken to cost before any has reported.
UNKNOWN_COMMAND_SECONDS = 1.0

#: Weight of the newest command in the running mean of their durations.
SMOOTHING = 0.3

#: Bundles per slot the fair share divides the remaining work into.
SHARES_PER_SLOT = 2

#: Pending tasks a bundle is cut from, at the most and at the least: after a
#: bundle of n tasks, the next is cut from 4 n, so a job of long tasks does not
#: read ten thousand rows for every bundle of two.
MAX_VIEW = 10_000
MIN_VIEW = 256


class BundleSizer:
    """Cuts a job's pending tasks into bundles of about the right work."""

    def __init__(self) -> None:
        #: Running mean of the job's commands' seconds; None until one reported.
        self.command_seconds: float | None = None
        #: How many pending tasks the next bundle is cut from.
        self.view = MAX_VIEW

    def observe_command(self, seconds: float) -> None:
        """A shell command of the job took ``seconds``."""
        if self.command_seconds is None:
            self.command_seconds = seconds
        else:
            self.command_seconds += SMOOTHING * (seconds - self.command_seconds)

    def cost(self, text: str) -> float:
        """The seconds a task is expected to take."""
        try:
            milliseconds = check_line(text)
        except ValueError:
            return 0.0  # it fails at once, with the reason
        if milliseconds is not None:
            return milliseconds / 1000.0 + SLEEP_OVERHEAD_SECONDS
        return UNKNOWN_COMMAND_SECONDS if self.command_seconds is None else self.command_seconds

    def cut(self, texts: list[str], remaining: int, slots: int) -> int:
        """How many of ``texts``, the job's next pending tasks in order, the next
        bundle takes; ``remaining`` counts all the job's undispatched tasks."""
        if not texts:
            return 0
        costs = [self.cost(text) for text in texts]
        # The tasks in view stand for the rest of the job.
        remaining_work = max(remaining, len(texts)) * sum(costs) / len(costs)
        fair_share = remaining_work / (SHARES_PER_SLOT * max(slots, 1))
        target = min(max(fair_share, MIN_BUNDLE_SECONDS), MAX_BUNDLE_SECONDS)
        work = 0.0
        taken = 0
        for cost in costs:
            taken += 1
            work += cost
            if work >= target:
                break
        self.view = min(MAX_VIEW, max(MIN_VIEW, 4 * taken))
        return taken
