"""``run.stop_when``: end a run when more paid data stops improving the student on held-out tasks.

The marginal-value rule looks at the held-out evaluations recorded so far (``heldout_loss`` per round,
with the cumulative teacher ``calls`` measured at the end of the same round). With K = ``window``, it
stops when either

- over the last K evaluations the loss fell by less than ``min_gain_per_100_calls`` of itself per 100
  calls paid in between (the gain no longer pays for the calls), or
- none of the last K evaluations beat the best loss before them (the loss got worse or stalled K times).

It needs K + 1 evaluations before it can say anything, and it never stops on a stretch that paid for no
call (a resumed run replaying its cache has not spent anything to judge). The rule reads only recorded
numbers, so a resumed run reaches the same decision at the same round as an uninterrupted one.

The gain is relative (a fraction of the earlier loss) because the loss's scale depends on the student and
the held-out tasks; per 100 calls because a per-call fraction is too small to read.
"""

from __future__ import annotations

from collections.abc import Mapping

from sedi.config.run import StopWhenConfig


def marginal_stop(rule: StopWhenConfig, heldout_loss: Mapping[int, float], calls: Mapping[int, float]) -> str | None:
    """Why the run should stop now (one sentence), or None to go on. Rounds map to held-out loss and to the
    cumulative teacher calls at the end of that round."""
    rounds = sorted(r for r in heldout_loss if r in calls)
    k = rule.window
    if len(rounds) < k + 1:
        return None
    window = rounds[-(k + 1) :]
    first, last = window[0], window[-1]
    earlier_best = min(heldout_loss[r] for r in rounds[:-k])
    if all(heldout_loss[r] >= earlier_best for r in window[1:]):
        return (
            f"run.stop_when: the held-out loss did not beat {earlier_best:.4f} in the last {k} evaluation(s) "
            f"(rounds {window[1] + 1}-{last + 1})"
        )
    paid = calls[last] - calls[first]
    if paid <= 0:
        return None
    gain = (heldout_loss[first] - heldout_loss[last]) / heldout_loss[first]
    per_100 = gain / paid * 100
    if per_100 < rule.min_gain_per_100_calls:
        return (
            f"run.stop_when: the held-out loss fell {gain:.2%} over the last {k} evaluation(s) (rounds "
            f"{first + 1}-{last + 1}, {paid:.0f} teacher calls), {per_100:.2%} per 100 calls, below "
            f"min_gain_per_100_calls {rule.min_gain_per_100_calls:.2%}"
        )
    return None
