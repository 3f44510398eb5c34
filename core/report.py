"""The report of one job (pydantic) and the files written from it.

``report.json`` is read from outside; its stable contract is ``ann.top1`` (a fraction) and
``methods[i].method`` / ``methods[i].top1`` (a list whose element t-1 is the accuracy after t
steps).  Everything else is informative and may grow.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field, computed_field

from core.hardware import DEFAULT_PROFILE, PROFILES
from core.paths import atomic_write_bytes


class EnergyModel(BaseModel):
    """Energy per operation and the assumptions behind the estimate."""

    profile: str = Field(DEFAULT_PROFILE, description="the hardware profile (core.hardware)")
    e_mac_pj: float = PROFILES[DEFAULT_PROFILE].e_mac_pj
    e_ac_pj: float = PROFILES[DEFAULT_PROFILE].e_ac_pj
    source: str = PROFILES[DEFAULT_PROFILE].source
    assumptions: list[str] = Field(default_factory=list)


class QuantisedAnn(BaseModel):
    """The ANN with activations of as many bits as T binary spikes can count."""

    bits: int = Field(description="⌈log2(T + 1)⌉ for the job's T")
    profile: str = Field(description="the integer arithmetic it is costed on")
    e_mac_pj: float
    energy_uj: float = Field(description="E_MAC of that arithmetic x MACs per sample")


class AnnResult(BaseModel):
    top1: float
    top5: float
    macs: int = Field(description="multiply-accumulates per sample")
    energy_uj: float = Field(description="E_MAC x MACs per sample, in microjoules")
    quantised: QuantisedAnn | None = Field(
        None, description="the same MACs on a ⌈log2(T+1)⌉-bit integer ANN: a baseline as "
                          "frugal with bits as the SNN")


class LayerStats(BaseModel):
    name: str
    kind: str = Field(description="neuron kind: if, asg, maxpool-gate, ...")
    channels: int
    threshold_mean: float
    threshold_min: float
    threshold_max: float
    firing_rate: float = Field(description="mean spikes per neuron per step at T_max")
    saturated_fraction: float = Field(
        description="neurons whose ANN activation exceeds the spike amplitude (clipped)")
    silent_fraction: float = Field(description="neurons that never fired in T_max steps")
    rate_error: float = Field(
        description="mean |clip(a/theta,0,1) - rate| at T_max, a the ANN activation"
    )
    spikes_per_sample: float = Field(
        0.0, description="spikes this layer emits per sample over the T_max steps")


class Latency(BaseModel):
    window: int = Field(description="time steps each spiking layer integrates (T)")
    end_to_end_steps: int = Field(description="steps from first input to the final readout")
    anytime: bool = Field(description="True when every t <= T gives a valid readout")
    note: str = ""


class LayerAttribution(BaseModel):
    """What the SNN recovers when layer ``layer`` and every IF layer before it run as ideal
    rate neurons (core.attribution)."""

    layer: str
    top1: list[float] = Field(description="element t-1: top-1 after t steps with the layers "
                                          "up to this one ideal")
    recovered: list[float] = Field(
        description="element t-1: this layer's share of the SNN's loss after t steps: top1 "
                    "minus the same with only the layers before it ideal")


class ExitPoint(BaseModel):
    """Early exit at one threshold τ: its calibration numbers (which choose) and its test
    numbers (which report)."""

    threshold: float | None = Field(
        description="τ on the margin (top output minus the runner-up, mean per step); "
                    "None: never exit early, every sample is read at T")
    calib_top1: float = Field(description="top-1 on the calibration images at this τ")
    calib_mean_steps: float = Field(description="mean exit step on the calibration images")
    top1: float = Field(description="test top-1, each sample read at its own exit step")
    mean_steps: float = Field(description="mean exit step on the test images")
    sops: float = Field(description="mean synaptic operations per test sample up to its exit")
    energy_uj: float = Field(description="mean energy per test sample up to its exit")


class EarlyExit(BaseModel):
    """Per-sample early exit (core.early_exit): accuracy against mean steps and SOPs."""

    statistic: str = Field(
        "margin", description="what τ compares: the largest minus the second-largest output "
                              "current, accumulated up to t and divided by t")
    calib_samples: int = Field(description="calibration images the thresholds came from")
    tolerance: float = Field(description="top-1 (a fraction) the operating point may lose on "
                                         "the calibration images against τ = None")
    points: list[ExitPoint] = Field(description="by increasing τ; the last is τ = None")
    chosen: int = Field(description="index of the operating point: the fewest calibration "
                                    "mean steps within the tolerance")

    @property
    def operating_point(self) -> ExitPoint:
        return self.points[self.chosen]


class MethodResult(BaseModel):
    method: str
    top1: list[float] = Field(description="element t-1: top-1 accuracy after t steps")
    top5: list[float]
    agreement: list[float] = Field(
        description="fraction of samples whose SNN argmax equals the reference ANN's")
    sops: list[float] = Field(
        description="cumulative synaptic operations per sample up to the readout at step t")
    energy_uj: list[float] = Field(description="cumulative energy per sample after t steps")
    latency: Latency
    layers: list[LayerStats]
    reference_top1: float | None = Field(
        None, description="accuracy of the network this method's SNN should match (e.g. the CQ ANN)"
    )
    parameters: dict = Field(default_factory=dict)
    analog_input: bool = Field(
        False, description="the first layer received the analog image (its MACs counted once)")
    error_attribution: list[LayerAttribution] = Field(
        default_factory=list, description="with error_attribution: per IF layer in graph "
                                          "order, the accuracy it costs (core.attribution)")
    early_exit: EarlyExit | None = Field(
        None, description="with early_exit: accuracy against mean steps and SOPs when each "
                          "sample stops once its output margin passes τ (core.early_exit)")
    seconds: float = 0.0

    @computed_field(description="spikes per sample over the T_max steps, summed over the "
                                "spiking layers (IF or ASG neurons)")
    @property
    def spikes_per_sample(self) -> float:
        return sum(layer.spikes_per_sample for layer in self.layers)


class DatasetInfo(BaseModel):
    name: str
    eval_samples: int
    calib_samples: int
    input_shape: list[int]
    num_classes: int


class ModelInfo(BaseModel):
    """What the uploaded model turned out to be, and the defaults that followed from it."""

    format: str
    detected: dict = Field(default_factory=dict,
                           description="whether the graph is CQ-trained, its L, m, T, coding")
    defaults: dict[str, str] = Field(default_factory=dict,
                                     description="option → why it has the value it has")


class MethodChoice(BaseModel):
    method: str
    t: int | None = Field(description="smallest t whose top-1 meets the target; None: no "
                                      "t ≤ T does")
    end_to_end_steps: int | None = Field(
        description="steps from the first input to that readout")
    top1: float | None = None
    sops: float | None = Field(None, description="synaptic operations per sample up to t")
    energy_uj: float | None = None
    early_exit: ExitPoint | None = Field(
        None, description="with early_exit: the cheapest early-exit point on the calibration "
                          "images that loses there no more than the method's test top-1 at T "
                          "has above the target; its test numbers (core.latency_choice)")


class LatencyChoice(BaseModel):
    target_top1: float = Field(description="the top-1 (a fraction) each method must reach")
    basis: str = Field(description="how the target was set")
    methods: list[MethodChoice]
    recommended: str | None = Field(description="the method meeting the target soonest end "
                                                "to end; None when none meets it")
    reason: str


class Report(BaseModel):
    snnconv_version: str
    created_at: datetime
    spec: dict
    dataset: DatasetInfo
    device: str
    model: ModelInfo | None = None
    ann: AnnResult
    methods: list[MethodResult]
    energy_model: EnergyModel
    versions: dict[str, str] = Field(default_factory=dict)
    artifacts: list[str] = Field(
        default_factory=list, description="extra files beside the report (the CQ network)")
    latency_choice: LatencyChoice | None = Field(
        None, description="with target_accuracy or max_gap: each method's smallest t meeting "
                          "the target, and the recommended method (core.latency_choice)")
    seconds: float = 0.0


REPORT_FILES = ("report.json", "report.csv", "accuracy.svg", "accuracy.png")
EARLY_EXIT_CSV = "early-exit.csv"  # beside them when the job asked for early exit


def report_files(report: Report) -> tuple[str, ...]:
    """The files ``write_report_files`` writes for ``report``."""
    early = any(result.early_exit is not None for result in report.methods)
    return (*REPORT_FILES, EARLY_EXIT_CSV) if early else REPORT_FILES


def neuron_class(result: MethodResult) -> str:
    """"if" for an anytime binary-IF network, "asg" for accumulate-then-spike."""
    return "if" if result.latency.anytime else "asg"


def readout_latency(result: MethodResult, t: int) -> int:
    """Steps from the first input to the readout after step t of the method's window."""
    return result.latency.end_to_end_steps - result.latency.window + t


def report_csv(report: Report) -> str:
    """One row per method x t, plus the ANN's accuracy on every row for reference.

    ``neuron_class`` and ``end_to_end_steps`` say what each row's t means: an ASG row's t is
    step t of the last layer's window, read (depth − 1)·T steps later than an IF row's."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["method", "neuron_class", "t", "end_to_end_steps", "top1", "top5", "agreement",
         "sops", "energy_uj", "ann_top1"]
    )
    for result in report.methods:
        for t, row in enumerate(
            zip(result.top1, result.top5, result.agreement, result.sops, result.energy_uj,
                strict=True),
            start=1,
        ):
            top1, top5, agree, sops, energy = row
            writer.writerow(
                [result.method, neuron_class(result), t, readout_latency(result, t),
                 f"{top1:.6f}", f"{top5:.6f}", f"{agree:.6f}", f"{sops:.1f}", f"{energy:.6f}",
                 f"{report.ann.top1:.6f}"]
            )
    return buffer.getvalue()


def early_exit_csv(report: Report) -> str:
    """One row per method × threshold of its early exit (τ empty: never early)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "neuron_class", "threshold", "calib_top1", "calib_mean_steps",
                     "top1", "mean_steps", "sops", "energy_uj", "chosen"])
    for result in report.methods:
        if result.early_exit is None:
            continue
        for index, point in enumerate(result.early_exit.points):
            writer.writerow(
                [result.method, neuron_class(result),
                 "" if point.threshold is None else repr(point.threshold),
                 f"{point.calib_top1:.6f}", f"{point.calib_mean_steps:.4f}",
                 f"{point.top1:.6f}", f"{point.mean_steps:.4f}", f"{point.sops:.1f}",
                 f"{point.energy_uj:.6f}", int(index == result.early_exit.chosen)])
    return buffer.getvalue()


def checkpoints(steps: int) -> list[int]:
    """t = 1, 2, 4, …, T (T itself always included)."""
    points, t = [], 1
    while t < steps:
        points.append(t)
        t *= 2
    return points + [steps]


# The two neuron classes, told apart by ``Latency.anytime``, each with the heading that says
# what its columns mean: an ASG row's "t" is not the same moment as an IF row's "t".
NEURON_CLASSES = (
    (True, "binary IF neurons: anytime, every t ≤ T is a readout; latency = T"),
    (False, "accumulate-then-spike neurons (ASG): latency = depth × T, not anytime; "
            "t = step t of\n  the last layer's window, read (depth − 1) × T steps after the "
            "input started"),
)
_NAME, _T, _CELL, _LATENCY, _ENERGY, _RATIO = 16, 4, 7, 9, 10, 8


def _header(points: list[int]) -> str:
    return (f"{'method':<{_NAME}}{'T':>{_T}}"
            + "".join(f"{'t=' + str(t):>{_CELL}}" for t in points)
            + f"{'latency':>{_LATENCY}}{'µJ at T':>{_ENERGY}}{'vs ANN':>{_RATIO}}")


def _row(result: MethodResult, points: list[int], ann_energy_uj: float) -> str:
    """One method: top-1 (%) at each t it reached, end-to-end latency and energy at its T."""
    cells = "".join(f"{100 * result.top1[t - 1]:>{_CELL}.2f}" if t <= len(result.top1)
                    else f"{'':>{_CELL}}" for t in points)
    energy = result.energy_uj[-1]
    ratio = f"{energy / ann_energy_uj:.2f}×" if ann_energy_uj > 0 else "–"
    return (f"{result.method:<{_NAME}}{result.latency.window:>{_T}}{cells}"
            f"{result.latency.end_to_end_steps:>{_LATENCY}}{energy:>{_ENERGY}.3f}"
            f"{ratio:>{_RATIO}}")


def _same_evaluation(reports: tuple[Report, ...]) -> None:
    def evaluation(report: Report) -> tuple:
        return report.dataset.name, report.dataset.eval_samples, report.ann.top1, report.ann.macs

    if len({evaluation(report) for report in reports}) > 1:
        raise ValueError("one table compares methods on the same ANN and the same test "
                         "images; these reports differ in dataset, samples or ANN")


def attribution_lines(result: MethodResult) -> list[str]:
    """The CLI's lines for one method: each layer's share at T, in points."""
    if not result.error_attribution:
        return []
    shares = ", ".join(f"{a.layer} {100 * a.recovered[-1]:+.2f}"
                       for a in result.error_attribution)
    ideal = 100 * result.error_attribution[-1].top1[-1]
    return [f"  {result.method:<16} at t = {len(result.top1)}: {shares} pp; all IF layers "
            f"ideal: {ideal:.2f} % (SNN {100 * result.top1[-1]:.2f} %)"]


def early_exit_heading(result: MethodResult) -> str:
    """What the early-exit lines mean (the same for every method of a job)."""
    early = result.early_exit
    return (f"early exit: a sample stops at the first t whose margin (top output − runner-up, "
            f"mean per step) reaches τ;\n  τ chosen on {early.calib_samples} calibration "
            f"images, at most {100 * early.tolerance:.2f} pp below their top-1 at T")


def early_exit_lines(result: MethodResult) -> list[str]:
    """The CLI's line for one method: its operating point against its readout at T."""
    early = result.early_exit
    if early is None:
        return []
    point, last = early.operating_point, early.points[-1]
    threshold = "τ = ∞" if point.threshold is None else f"τ = {point.threshold:.4g}"
    share = f"{100 * point.sops / last.sops:.0f} %" if last.sops > 0 else "–"
    return [f"  {result.method:<16} {threshold}: {100 * point.top1:.2f} % at "
            f"{point.mean_steps:.2f} mean steps (T = {len(result.top1)}: "
            f"{100 * result.top1[-1]:.2f} %), {share} of the SOPs"]


def _quantised_lines(reports: tuple[Report, ...]) -> list[str]:
    """The quantised-ANN baseline of each distinct T among the reports."""
    lines, seen = [], set()
    for report in reports:
        quantised, steps = report.ann.quantised, report.spec.get("timesteps")
        if quantised is None or steps in seen:
            continue
        seen.add(steps)
        lines.append(f"as a {quantised.bits}-bit integer ANN (the bits {steps} steps of spikes "
                     f"count): {quantised.energy_uj:.3f} µJ per image ({quantised.profile}, "
                     f"{quantised.e_mac_pj:g} pJ per MAC)")
    return lines


def accuracy_table(*reports: Report) -> str:
    """Top-1 (%) at t = 1, 2, 4, …, T for every method of one or more reports, beside the ANN.

    Several reports (jobs of different T on the same model and images) share one table.  Rows
    are grouped by neuron class, and each row ends with the end-to-end latency in steps, the
    energy per image after its last step and that energy as a multiple of the ANN's.
    """
    if not reports:
        raise ValueError("accuracy_table needs at least one report")
    _same_evaluation(reports)
    first = reports[0]
    results = [result for report in reports for result in report.methods]
    points = checkpoints(max(len(result.top1) for result in results))
    header = _header(points)
    ann = first.ann
    lines = [f"ANN top-1: {100 * ann.top1:.2f} % on {first.dataset.eval_samples} "
             f"{first.dataset.name} test images; energy {ann.energy_uj:.3f} µJ per image "
             f"({ann.macs:,} MACs × {first.energy_model.e_mac_pj:g} pJ, "
             f"{first.energy_model.profile})",
             *_quantised_lines(reports), header, "-" * len(header)]
    for anytime, heading in NEURON_CLASSES:
        group = [result for result in results if result.latency.anytime == anytime]
        if group:
            lines.append(heading)
            lines.extend(_row(result, points, ann.energy_uj) for result in group)
    lines += ["-" * len(header),
              "top-1 in %; latency: end-to-end steps from the first input to the readout; "
              "µJ at T: energy",
              "per image after the row's last step; vs ANN: that energy / the ANN's"]
    return "\n".join(lines)


def accuracy_figure(report: Report):
    """Accuracy-vs-timestep figure with the ANN's accuracy as a reference line; with early
    exit, a second panel of accuracy against mean steps."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    early = [result for result in report.methods if result.early_exit is not None]
    figure = Figure(figsize=(12, 4.2) if early else (7, 4.2), dpi=110)
    axes = figure.add_subplot(1, 2, 1) if early else figure.add_subplot()
    colours = {}
    for result in report.methods:
        steps = range(1, len(result.top1) + 1)
        asg = neuron_class(result) == "asg"
        # an ASG curve's t is not an IF curve's moment: its label says when it is read
        label = (f"{result.method} (ASG: read {readout_latency(result, 0)} + t steps after "
                 "the input)" if asg else result.method)
        (line,) = axes.plot(steps, [100 * a for a in result.top1], label=label,
                            linewidth=1.6, linestyle="-." if asg else "-")
        colours[result.method] = line.get_color()
        if result.error_attribution:  # the ceiling the error attribution measured
            axes.plot(steps, [100 * a for a in result.error_attribution[-1].top1],
                      label=f"{result.method}: all IF layers ideal", linewidth=1,
                      linestyle=":", color=line.get_color())
    axes.axhline(100 * report.ann.top1, color="black", linestyle="--", linewidth=1,
                 label=f"ANN {100 * report.ann.top1:.2f} %")
    if report.latency_choice is not None:
        _mark_choice(axes, report.latency_choice, colours)
    longest = max((len(r.top1) for r in report.methods), default=1)
    if longest >= 16:
        axes.set_xscale("log", base=2)
    axes.set_xlabel("time step t")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_title(f"{report.dataset.name}: SNN accuracy per time step "
                   f"({report.dataset.eval_samples} samples)")
    axes.set_ylim(0, 100)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    if early:
        _early_exit_axes(figure.add_subplot(1, 2, 2, sharey=axes), early, colours,
                         log_steps=longest >= 16)
    figure.tight_layout()
    return figure


def _early_exit_axes(axes, results: list[MethodResult], colours: dict[str, str],
                     log_steps: bool) -> None:
    """Test top-1 against mean exit steps per method (one point per τ, the operating point
    a star), beside the plain readout at each t (faint) at the same steps."""
    for result in results:
        colour, points = colours[result.method], result.early_exit.points
        axes.plot(range(1, len(result.top1) + 1), [100 * a for a in result.top1],
                  color=colour, linewidth=1, alpha=0.35)
        axes.plot([p.mean_steps for p in points], [100 * p.top1 for p in points],
                  color=colour, marker=".", linewidth=1.6,
                  label=f"{result.method}: early exit")
        chosen = result.early_exit.operating_point
        axes.plot([chosen.mean_steps], [100 * chosen.top1], marker="*", markersize=11,
                  color=colour, linestyle="none")
    if log_steps:
        axes.set_xscale("log", base=2)
    axes.set_xlabel("mean steps per sample")
    axes.set_title("early exit: test top-1 vs mean steps (★ chosen; faint: every sample at t)",
                   fontsize=9)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)


def _mark_choice(axes, choice: LatencyChoice, colours: dict[str, str]) -> None:
    """The target as a dotted line, and each method's first t meeting it as a dot."""
    axes.axhline(100 * choice.target_top1, color="grey", linestyle=":", linewidth=1,
                 label=f"target {100 * choice.target_top1:.2f} %")
    for method in choice.methods:
        if method.t is not None:
            axes.plot([method.t], [100 * method.top1], marker="o", markersize=5,
                      color=colours[method.method], linestyle="none")


def write_report_files(report: Report, out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.csv, accuracy.svg and accuracy.png atomically into out_dir,
    and early-exit.csv when the report has early exit (``report_files``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = accuracy_figure(report)
    rendered = {}
    for fmt in ("svg", "png"):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
        rendered[fmt] = buffer.getvalue()
    contents = {
        "report.json": report.model_dump_json(indent=2).encode(),
        "report.csv": report_csv(report).encode(),
        "accuracy.svg": rendered["svg"],
        "accuracy.png": rendered["png"],
    }
    if EARLY_EXIT_CSV in report_files(report):
        contents[EARLY_EXIT_CSV] = early_exit_csv(report).encode()
    paths = {}
    for name, data in contents.items():
        paths[name] = out_dir / name
        atomic_write_bytes(paths[name], data)
    return paths
