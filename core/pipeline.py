"""JobSpec → Report: ``run`` is the single entry point; ``run_into`` also writes the job's
files into a folder, for the CLI, the demo and the worker.

    load model ─► canonical ANN ─► pre-flight ─► ANN accuracy and MACs
        └─► for each method: convert (calibrate / fine-tune) ─► simulate T steps ─► result
"""

from __future__ import annotations

import copy
import dataclasses
import json
import platform
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import fx, nn

from core import __version__, network_files, shards
from core.attribution import attribute_errors
from core.datasets import Dataset, Split, load_dataset, take
from core.early_exit import (
    EXIT_CALIB_SAMPLES,
    ExitCalibration,
    ExitCounter,
    TraceCollector,
    calibrate,
    summarise,
)
from core.energy import (
    count_macs,
    device_of,
    energy_model,
    microjoules,
    quantised_ann,
    synaptic_fanouts,
)
from core.errors import InvalidSpec
from core.graph import adapt_input_layout, canonicalize, preflight, require_convertible, trace
from core.graph.modules import ChannelAffine
from core.inference import batched_logits
from core.ingest import load_model
from core.job_defaults import resolve as resolve_defaults
from core.latency_choice import choose_latency
from core.methods import ConversionContext, convert
from core.preflight import PreflightReport
from core.progress import ProgressCallback, ProgressEvent, ignore_progress
from core.report import (
    AnnResult,
    DatasetInfo,
    MethodResult,
    ModelInfo,
    Report,
    atomic_write_bytes,
    write_report_files,
)
from core.simulate import simulate, topk_correct
from core.spec import CLASSIC_METHODS, JobSpec, tuned_model_files
from core.train import export_onnx, export_safetensors
from core.train.recognise import detect


def warm_up() -> list[str]:
    """Pay a fresh process's one-time costs before its first job: the kernels' compilation
    and the lazy imports of shape propagation (sympy, about a second).  Returns the kernels
    that are ready; a worker calls it at start so that short tasks (shards) measure work."""
    import torch.fx.experimental.symbolic_shapes  # noqa: F401 - ShapeProp imports it lazily

    from core import if_kernel

    return if_kernel.warm_up()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidSpec("device 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


def with_normalisation(ann: nn.Module, mean: list[float] | None,
                       std: list[float] | None) -> nn.Module:
    """Put the per-channel (x − mean)/std in front of the model, so data stays in [0, 1]."""
    if mean is None:
        return ann
    return nn.Sequential(ChannelAffine.normalisation(mean, std), ann)


def inspect(model_path: Path, arch: str | None = None) -> PreflightReport:
    """Load a model file (refusing hostile ones) and report what conversion would do."""
    loaded = load_model(Path(model_path), arch)
    return preflight(canonicalize(loaded.module), fmt=loaded.format,
                     input_shape=tuple(loaded.input_shape))


def _check_normalisation(spec: JobSpec, dataset: Dataset) -> None:
    if spec.mean is not None and len(spec.mean) != dataset.input_shape[0]:
        raise InvalidSpec(f"mean/std have {len(spec.mean)} entries but the dataset's samples "
                          f"have {dataset.input_shape[0]} channels")


def _versions() -> dict[str, str]:

    return {"snnconv": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "onnx": onnx.__version__, "python": platform.python_version()}


class _Stages:
    """Maps each stage of each method onto one overall 0..1 progress scale."""

    def __init__(self, callback: ProgressCallback, methods: int):
        self.callback, self.methods = callback, methods
        self.method_index, self.method = 0, None

    def emit(self, stage: str, fraction: float, message: str = "",
             partial: list[float] | None = None) -> None:
        if stage == "load":
            overall = 0.05 * fraction
        elif stage == "report":
            overall = 0.95 + 0.05 * fraction
        else:
            within = 0.5 * fraction if stage != "simulate" else 0.5 + 0.5 * fraction
            overall = 0.05 + 0.9 * (self.method_index + within) / self.methods
        self.callback(ProgressEvent(stage=stage, progress=min(max(overall, 0.0), 1.0),
                                    message=message, method=self.method,
                                    partial_top1=partial or None))


@dataclass
class PreparedJob:
    """A loaded, checked, canonicalised model with its data, ready for any method."""

    ctx: ConversionContext
    dataset: Dataset
    evaluation: Split
    model: ModelInfo


def prepare(spec: JobSpec, stage_progress=lambda *_: None) -> PreparedJob:
    """Load model and dataset, check they fit, canonicalise and pre-flight the model."""
    device = resolve_device(spec.device)
    loaded = load_model(spec.model_path, spec.arch)
    dataset = load_dataset(spec.dataset, spec.data_dir)
    layout = adapt_input_layout(loaded.module, loaded.input_shape, dataset.input_shape,
                                dataset.name)
    _check_normalisation(spec, dataset)
    source = trace(with_normalisation(layout.module, spec.mean, spec.std))
    ann = canonicalize(source)
    require_convertible(preflight(ann, fmt=loaded.format, input_shape=dataset.input_shape,
                                  removed=layout.removed))
    found = detect(ann)
    spec, defaults = resolve_defaults(spec, found)
    ctx = ConversionContext(ann=ann.to(device), trainable=source.to(device), spec=spec,
                            device=device, sample_shape=dataset.input_shape,
                            train_x=dataset.train.x, train_y=dataset.train.y,
                            calib_x=take(dataset.train, spec.calib_samples).x,
                            progress=stage_progress, detection=found)
    return PreparedJob(ctx=ctx, dataset=dataset,
                       evaluation=take(dataset.test, spec.eval_samples),
                       model=ModelInfo(format=loaded.format, detected=found.describe(),
                                       defaults=defaults))


def _ann_result(ann: fx.GraphModule, evaluation: Split, spec: JobSpec,
                sample_shape: tuple[int, ...]) -> AnnResult:
    """The ANN's own accuracy on the evaluation samples, its MACs and energy (on the spec's
    hardware, and as a quantised ANN of as many bits as the spec's T spikes count)."""
    logits = batched_logits(ann, evaluation.x, spec.batch_size, device_of(ann))
    labels = torch.from_numpy(evaluation.y)
    macs = sum(count_macs(synaptic_fanouts(ann, sample_shape)).values())
    return AnnResult(top1=int(topk_correct(logits, labels, 1)) / len(labels),
                     top5=int(topk_correct(logits, labels, 5)) / len(labels),
                     macs=macs, energy_uj=microjoules(spec.energy_profile, macs=macs),
                     quantised=quantised_ann(macs, spec.timesteps))


CQ_MODEL_FILES = ("cq-model.onnx", "cq-model.safetensors")


def export_cq_model(ctx: ConversionContext, directory: Path) -> list[str]:
    """Give the user the CQ network the paper's methods converted (ONNX and safetensors),
    and each spike-aware fine-tuned copy of it (cq-if, cq-ctt) under its method's name."""
    if ctx.cq_network is None:
        return []
    networks = [(CQ_MODEL_FILES, ctx.cq_network.model),
                *((tuned_model_files(method), model)
                  for method, model in ctx.tuned_networks.items())]
    for names, network in networks:
        _export_network(network, ctx, *(directory / name for name in names))
    return [name for names, _ in networks for name in names]


def _export_network(model: fx.GraphModule, ctx: ConversionContext, onnx_path: Path,
                    weights_path: Path) -> None:
    export_onnx(model.cpu().eval(), (1, *ctx.sample_shape), onnx_path, dynamo=False)
    export_safetensors(model, weights_path)
    model.to(ctx.device)


def run(spec: JobSpec, progress: ProgressCallback = ignore_progress,
        artifacts_dir: Path | None = None) -> Report:
    """Convert the spec's model with each method and evaluate it on the spec's dataset.

    With ``artifacts_dir``, a CQ network built for the paper's methods is exported there.
    """
    began = time.perf_counter()
    stages = _Stages(progress, len(spec.methods))
    stages.emit("load", 0.0, "loading model and dataset")
    job = prepare(spec, lambda stage, f, msg: stages.emit(stage, f, msg))
    ctx, dataset, evaluation, device = job.ctx, job.dataset, job.evaluation, job.ctx.device
    spec = ctx.spec
    stages.emit("load", 1.0, "evaluating the ANN")
    ann_result = _ann_result(ctx.ann, evaluation, spec, dataset.input_shape)
    results = []
    for index, method in enumerate(spec.methods):
        stages.method_index, stages.method = index, method
        stages.emit("convert", 0.0, f"converting with {method}")
        torch.manual_seed(spec.seed)
        snn = convert(method, ctx)
        calibration = calibrate_early_exit(snn, ctx)
        results.append(simulate_with_attribution(
            snn, spec, evaluation.x, evaluation.y, dataset.input_shape, device,
            progress=lambda f, partial: stages.emit("simulate", f, "simulating", partial),
            exit_calibration=calibration))
    artifacts = export_cq_model(ctx, Path(artifacts_dir)) if artifacts_dir else []
    stages.emit("report", 1.0, "done")
    analog = any(result.analog_input for result in results)
    return _report(job, ann_result, results, artifacts, energy_model(analog, spec.energy_profile),
                   seconds=time.perf_counter() - began)


def simulate_with_attribution(snn, spec: JobSpec, x: np.ndarray, y: np.ndarray,
                              sample_shape: tuple[int, ...], device: torch.device,
                              progress=None,
                              exit_calibration: ExitCalibration | None = None) -> MethodResult:
    """``simulate`` as the spec asks, with the error attribution when it asks for one, and
    the early exit at ``exit_calibration``'s thresholds when one is given."""
    def run_on_samples(network, report=None, per_sample=None) -> MethodResult:
        return simulate(network, x, y, sample_shape=sample_shape, batch_size=spec.batch_size,
                        device=device, memory_budget_mb=spec.memory_budget_mb,
                        energy_profile=spec.energy_profile, progress=report,
                        per_sample=per_sample)

    exits = None if exit_calibration is None else ExitCounter(exit_calibration.thresholds)
    result = run_on_samples(snn, progress, exits)
    if exits is not None:
        result.early_exit = summarise(exit_calibration, exits.counts)
    if spec.error_attribution:
        result.error_attribution = attribute_errors(snn, result, run_on_samples)
    return result


def calibrate_early_exit(snn, ctx: ConversionContext) -> ExitCalibration | None:
    """With ``early_exit``: simulate the first ``EXIT_CALIB_SAMPLES`` calibration images
    (labels from the training split, whose first images they are) and choose the early-exit
    thresholds from them (``core.early_exit``); None without."""
    spec = ctx.spec
    if not spec.early_exit:
        return None
    samples = min(len(ctx.calib_x), EXIT_CALIB_SAMPLES)
    collector = TraceCollector()
    # its own copy of the encoder: a Poisson stream must start the test split where it
    # would without early exit
    own = dataclasses.replace(snn, encoder=copy.deepcopy(snn.encoder))
    simulate(own, ctx.calib_x[:samples], ctx.train_y[:samples], sample_shape=ctx.sample_shape,
             batch_size=spec.batch_size, device=ctx.device,
             memory_budget_mb=spec.memory_budget_mb, energy_profile=spec.energy_profile,
             per_sample=collector)
    return calibrate(collector.joined(), spec.early_exit_tolerance)


def report_spec(spec: JobSpec) -> dict:
    """The spec as a report shows it: no server paths, only the model file's and the data
    directory's own names (a report is handed to users; where the files lie is not theirs)."""
    shown = spec.model_dump(mode="json")
    shown["model_path"] = spec.model_path.name
    shown["data_dir"] = None if spec.data_dir is None else spec.data_dir.name
    return shown


def _report(job: PreparedJob, ann_result: AnnResult, results: list, artifacts: list[str],
            energy: dict, seconds: float | None = None) -> Report:
    """The report of a prepared job: what it ran on and the results of its methods."""
    ctx, dataset = job.ctx, job.dataset
    extra = {} if seconds is None else {"seconds": seconds}
    choice = choose_latency(results, ann_result.top1, ctx.spec.target_accuracy,
                            ctx.spec.max_gap)
    return Report(
        snnconv_version=__version__, created_at=datetime.now(UTC),
        spec=report_spec(ctx.spec),
        dataset=DatasetInfo(name=dataset.name, eval_samples=len(job.evaluation.y),
                            calib_samples=len(ctx.calib_x),
                            input_shape=list(dataset.input_shape),
                            num_classes=dataset.num_classes),
        device=str(ctx.device), model=job.model, ann=ann_result, methods=results,
        energy_model=energy, versions=_versions(), artifacts=artifacts, latency_choice=choice,
        **extra)


def run_into(spec: JobSpec, out_dir: Path,
             progress: ProgressCallback = ignore_progress) -> Report:
    """``run`` the job and write its files into ``out_dir`` (created if missing): the report
    files (``core.report.REPORT_FILES``) and, when the paper's methods built a CQ network, that
    network (``CQ_MODEL_FILES``, listed in the report's ``artifacts``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = run(spec, progress, artifacts_dir=out_dir)
    write_report_files(report, out_dir)
    return report


# --- sharded evaluation (core.shards): convert once, evaluate slices, merge ------------------

SHARED_DIRNAME = "shared"   # inside the job's folder: the plan, the networks, the partials
PLAN_FILE = "plan.json"


@dataclass
class ShardPlan:
    """What ``share_networks`` left in ``directory``: the converted networks of every method
    and the report without its methods; the slices [start, stop) are still to evaluate."""

    directory: Path
    samples: int
    bounds: list[tuple[int, int]]


def evaluation_size(spec: JobSpec) -> int:
    """How many samples the job evaluates (loads the dataset, not the model)."""
    return len(take(load_dataset(spec.dataset, spec.data_dir).test, spec.eval_samples))


def shardable(spec: JobSpec) -> bool:
    """Whether slices give the same results as one run: not with Poisson input, whose random
    stream runs on from one batch to the next (only the classic methods use it)."""
    classic = [m for m in spec.methods if m in CLASSIC_METHODS]
    return not (classic and spec.input_encoding == "poisson")


def share_networks(spec: JobSpec, out_dir: Path, shard_size: int,
                   progress: ProgressCallback = ignore_progress) -> ShardPlan:
    """Prepare the job and convert every method once (fine-tuning, calibration, CTT), then
    store the networks and the report's method-independent part under ``out_dir/shared``.

    The CQ network is exported into ``out_dir`` as ``run_into`` does.  Raises
    ``core.network_files.NotShareable`` when a network has no pickle-free form.
    """
    began = time.time()
    out_dir = Path(out_dir)
    directory = out_dir / SHARED_DIRNAME
    directory.mkdir(parents=True, exist_ok=True)

    current = {"method": None, "index": 0}

    def emit(stage: str, fraction: float, message: str) -> None:
        """load: 0 to 0.05; converting method i of M: its share of 0.05 to SHARDS_START."""
        share = shards.SHARDS_START - 0.05
        overall = (0.05 * fraction if stage == "load"
                   else 0.05 + share * (current["index"] + fraction) / len(spec.methods))
        progress(ProgressEvent(stage=stage, progress=min(max(overall, 0.0), 1.0),
                               message=message, method=current["method"]))

    emit("load", 0.0, "loading model and dataset")
    job = prepare(spec, emit)
    ctx, dataset, evaluation = job.ctx, job.dataset, job.evaluation
    spec = ctx.spec
    emit("load", 1.0, "evaluating the ANN")
    ann_result = _ann_result(ctx.ann, evaluation, spec, dataset.input_shape)
    names, calibrations = [], []
    for index, method in enumerate(spec.methods):
        current.update(method=method, index=index)
        emit("convert", 0.0, f"converting with {method}")
        torch.manual_seed(spec.seed)
        snn = convert(method, ctx)
        name = f"network-{index}"
        network_files.save_network(snn, directory, name)
        names.append(name)
        # chosen once here, so that every slice counts at the same thresholds
        calibration = calibrate_early_exit(snn, ctx)
        calibrations.append(None if calibration is None else calibration.model_dump(mode="json"))
        emit("convert", 1.0, f"{method} converted and stored")
    artifacts = export_cq_model(ctx, out_dir)
    skeleton = _report(job, ann_result, [], artifacts, energy_model(False, spec.energy_profile))
    bounds = shards.shard_bounds(len(evaluation.y), shard_size, spec.batch_size)
    # the full spec (with its paths) for the shards; the report's spec names files only
    plan = {"report": skeleton.model_dump(mode="json"), "spec": spec.model_dump(mode="json"),
            "networks": names, "exit_calibrations": calibrations,
            "bounds": bounds, "began": began}
    atomic_write_bytes(directory / PLAN_FILE, json.dumps(plan).encode())
    return ShardPlan(directory=directory, samples=len(evaluation.y), bounds=bounds)


def _read_plan(directory: Path) -> dict:
    return json.loads((Path(directory) / PLAN_FILE).read_text())


def shard_path(directory: Path, index: int) -> Path:
    return Path(directory) / f"shard-{index:05d}.json"


def evaluate_shard(directory: Path, index: int, device: str | None = None):
    """Simulate slice ``index`` of the plan in ``directory`` with every stored network and
    store its ``core.shards.ShardResult`` beside them (also returned)."""
    plan = _read_plan(directory)
    spec = JobSpec.model_validate(plan.get("spec") or plan["report"]["spec"])  # older plans
    start, stop = plan["bounds"][index]
    dataset = load_dataset(spec.dataset, spec.data_dir)
    evaluation = take(dataset.test, spec.eval_samples)
    x, y = evaluation.x[start:stop], evaluation.y[start:stop]
    target = resolve_device(device or spec.device)
    methods = []
    calibrations = plan.get("exit_calibrations") or [None] * len(plan["networks"])
    for name, calibration in zip(plan["networks"], calibrations, strict=True):
        snn = network_files.load_network(directory, name)
        result = simulate_with_attribution(
            snn, spec, x, y, dataset.input_shape, target,
            exit_calibration=None if calibration is None
            else ExitCalibration.model_validate(calibration))
        methods.append(shards.to_shard(result, len(y)))
    shard = shards.ShardResult(index=index, start=start, stop=stop, methods=methods)
    shards.write_shard(shard, shard_path(directory, index))
    return shard


def finished_shards(directory: Path) -> list:
    """The ShardResults already stored in ``directory`` (for live progress)."""
    return [shards.read_shard(path) for path in sorted(Path(directory).glob("shard-*.json"))]


def merge_shards(directory: Path) -> Report:
    """The job's Report from its stored plan and the ShardResults of every slice."""
    plan = _read_plan(directory)
    found = {shard.index: shard for shard in finished_shards(directory)}
    missing = [i for i in range(len(plan["bounds"])) if i not in found]
    if missing:
        raise ValueError(f"shards {missing} have no result")
    results = shards.merge([found[i] for i in range(len(plan["bounds"]))])
    analog = any(result.analog_input for result in results)
    skeleton = Report.model_validate(plan["report"])
    spec = skeleton.spec
    choice = choose_latency(results, skeleton.ann.top1, spec.get("target_accuracy"),
                            spec.get("max_gap"))
    return skeleton.model_copy(update={
        "methods": results, "latency_choice": choice,
        "energy_model": energy_model(analog, skeleton.energy_model.profile),
        "created_at": datetime.now(UTC), "seconds": time.time() - plan["began"]})


def merge_shards_into(out_dir: Path) -> Report:
    """``merge_shards`` of ``out_dir/shared``, written into ``out_dir`` like ``run_into``
    writes its report (``write_report_files``); the shared folder is removed afterwards."""

    out_dir = Path(out_dir)
    report = merge_shards(out_dir / SHARED_DIRNAME)
    write_report_files(report, out_dir)
    shutil.rmtree(out_dir / SHARED_DIRNAME, ignore_errors=True)
    return report
