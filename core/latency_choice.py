"""Choice of T: the smallest time step at which each method meets an accuracy target.

The target is an absolute top-1 (``target_accuracy``) or the ANN's top-1 less a gap
(``max_gap``).  A method's t counts its own window's steps; what a user waits for is the
end-to-end latency of that readout, ``end_to_end_steps − window + t`` (t for an anytime IF
network, (depth − 1)·T + t for accumulate-then-spike), so the recommendation compares those:
the method that meets the target soonest end to end, the fewest synaptic operations breaking a
tie.  It reads the report's curves only; nothing is simulated again.

With early exit (``core.early_exit``) each method also gets the cheapest early-exit point
for the target, chosen on the calibration images: the calibration images are training
images, on which a network is more accurate than on the test split, so an absolute target
there would choose too eagerly.  Instead the point may lose on them, against τ = ∞, what
the method's test top-1 at T has above the target,

    h = top1_test(T) − target ≥ 0,   fewest calibration mean steps with
    calib_top1(τ) ≥ calib_top1(∞) − h,

and its test top-1, mean steps and SOPs are what the choice reports (a method below the
target at T gets none).
"""

from __future__ import annotations

from core.early_exit import cheapest_within
from core.report import ExitPoint, LatencyChoice, MethodChoice, MethodResult, readout_latency


def target_top1(ann_top1: float, target_accuracy: float | None,
                max_gap: float | None) -> tuple[float, str] | None:
    """(target, how it was set), or None when the job asked for no choice of T."""
    if target_accuracy is not None:
        return target_accuracy, f"target accuracy {100 * target_accuracy:.2f} %"
    if max_gap is not None:
        return ann_top1 - max_gap, (f"the ANN's {100 * ann_top1:.2f} % less a gap of "
                                    f"{100 * max_gap:.2f} pp")
    return None


def _early_exit_meeting(result: MethodResult, target: float) -> ExitPoint | None:
    """The early-exit point for ``target`` (the module docstring's rule), or None."""
    if result.early_exit is None:
        return None
    points = result.early_exit.points
    chosen = cheapest_within(points, result.top1[-1] - target)
    return None if chosen is None else points[chosen]


def _first_meeting(result: MethodResult, target: float) -> MethodChoice:
    # a tolerance for the fraction's own rounding: 970/1000 meets a 0.97 target
    t = next((t for t, top1 in enumerate(result.top1, start=1) if top1 >= target - 1e-12), None)
    early_exit = _early_exit_meeting(result, target)
    if t is None:
        return MethodChoice(method=result.method, t=None, end_to_end_steps=None,
                            early_exit=early_exit)
    return MethodChoice(method=result.method, t=t, end_to_end_steps=readout_latency(result, t),
                        top1=result.top1[t - 1], sops=result.sops[t - 1],
                        energy_uj=result.energy_uj[t - 1], early_exit=early_exit)


def choose_latency(results: list[MethodResult], ann_top1: float, target_accuracy: float | None,
                   max_gap: float | None) -> LatencyChoice | None:
    """Each method's smallest t meeting the target, and the recommended method."""
    target = target_top1(ann_top1, target_accuracy, max_gap)
    if target is None:
        return None
    value, basis = target
    choices = [_first_meeting(result, value) for result in results]
    meeting = [c for c in choices if c.t is not None]
    if not meeting:
        longest = max((len(r.top1) for r in results), default=0)
        return LatencyChoice(target_top1=value, basis=basis, methods=choices, recommended=None,
                             reason=f"no method reaches {100 * value:.2f} % within its "
                                    f"window (up to t = {longest}); a longer T, another "
                                    "method or a lower target")
    best = min(meeting, key=lambda c: (c.end_to_end_steps, c.sops))
    return LatencyChoice(
        target_top1=value, basis=basis, methods=choices, recommended=best.method,
        reason=f"{best.method} reaches {100 * best.top1:.2f} % at t = {best.t}, "
               f"{best.end_to_end_steps} steps end to end, the soonest of "
               f"{len(meeting)} method(s) meeting the target")


def choice_lines(choice: LatencyChoice) -> list[str]:
    """The choice as the CLI prints it under the accuracy table."""
    lines = [f"choice of T: top-1 ≥ {100 * choice.target_top1:.2f} % ({choice.basis})"]
    for c in choice.methods:
        lines.append(f"  {c.method:<16} " + (
            "not reached within its window" if c.t is None else
            f"t = {c.t:<4} end to end {c.end_to_end_steps:<5} steps  top-1 "
            f"{100 * c.top1:6.2f} %  SOPs/sample {c.sops:,.0f}"))
        if c.early_exit is not None:
            point = c.early_exit
            lines.append(f"  {'':<16} early exit: {point.mean_steps:.2f} mean steps  top-1 "
                         f"{100 * point.top1:6.2f} %  SOPs/sample {point.sops:,.0f}")
    lines.append(f"  recommended: {choice.recommended or 'none'} — {choice.reason}")
    return lines
