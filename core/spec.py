"""The job specification: everything that determines a report, validated at the boundary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from core.hardware import DEFAULT_PROFILE, ProfileName

# The method names, stated here only; core.methods.CONVERTERS has one converter for each
# (tests/core/test_methods.py checks that).
ClassicMethod = Literal["max-norm", "robust-norm", "half-threshold", "channel-norm"]
PaperMethod = Literal["cq-asg", "cq-if", "cq-ctt"]  # the low-latency suite of Yan, Zhou & Wong
TrainedIFMethod = Literal["qcfs"]  # quantisation-clip-floor-shift fine-tuning (Bu et al.)
MethodName = Literal[ClassicMethod, PaperMethod, TrainedIFMethod]

CLASSIC_METHODS: tuple[ClassicMethod, ...] = get_args(ClassicMethod)
PAPER_METHODS: tuple[PaperMethod, ...] = get_args(PaperMethod)
TRAINED_IF_METHODS: tuple[TrainedIFMethod, ...] = get_args(TrainedIFMethod)
METHODS: tuple[MethodName, ...] = get_args(MethodName)
# the suite's plain-IF methods: they take initial_membrane and spike-aware fine-tuning
IF_METHODS: tuple[PaperMethod, ...] = ("cq-if", "cq-ctt")


# Every field is strict and bounded: a bool is not an int, "3" is not a number, floats are
# finite, strings are short, printable and free of NUL (which PostgreSQL's JSON refuses).
MAX_SEED = 2**32 - 1
MAX_NAME_CHARS = 200
MAX_PATH_CHARS = 4096
MAX_CHANNELS = 4096
MAX_SAMPLES = 100_000_000


ARCH_MAX_CHARS = 64
# the characters _control_characters refuses, as a pattern for schemas that take a regex
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"


def _control_characters(text: str) -> bool:
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def _printable(text: str | None) -> str | None:
    if text is not None and _control_characters(text):
        raise ValueError("must not contain control characters (NUL, newline, tab, ...)")
    return text


def _plain_path(path: Path | None) -> Path | None:
    if path is not None:
        if "\0" in str(path):
            raise ValueError("must not contain NUL characters")
        if len(str(path)) > MAX_PATH_CHARS:
            raise ValueError(f"must be at most {MAX_PATH_CHARS} characters")
    return path


FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def tuned_model_files(method: str) -> tuple[str, str]:
    """The files (ONNX, safetensors) of the CQ network spike-aware fine-tuning gave ``method``."""
    return f"{method}-model.onnx", f"{method}-model.safetensors"


class CQOptions(BaseModel):
    """Options of the paper's low-latency suite (Yan, Zhou & Wong); see docs/methods.md."""

    model_config = ConfigDict(extra="forbid")

    levels: int | None = Field(
        None, ge=1, le=4096, strict=True,
        description="L, quantisation levels per unit; default T/m")
    clamp_max: float | None = Field(
        None, gt=0, le=64, strict=True, allow_inf_nan=False,
        description="m = T/L, the clamp maximum; default 0.25 at T=1, else 0.8")
    encoding: Literal["direct", "vr", "vr-ice"] | None = Field(
        None,
        description="input coding; None: the coding a CQ-trained upload was trained with "
                    "(direct unless VR/ICE is found at its input), else vr")
    ice_grids: int = Field(3, ge=1, le=7, strict=True,
                           description="ICE grids around L: L-k..L+k (odd count)")
    ice_copies: int = Field(1, ge=1, le=4, strict=True,
                            description="how often the ICE grids are repeated")
    finetune_epochs: int | None = Field(
        None, ge=0, le=500, strict=True,
        description="None: 0 for an upload that is already CQ-trained, else 2; 0 needs a "
                    "CQ-trained upload")
    learning_rate: float = Field(1e-3, gt=0, le=10, strict=True, allow_inf_nan=False,
                                 description="learning rate of the CQ fine-tuning")
    surrogate_margin: float | None = Field(
        None, ge=0, le=16, strict=True, allow_inf_nan=False,
        description="straight-through window [-k/L, m + k/L] in levels k; 0 is the paper's "
                    "[0, m]; None: 1 at T = 1, else 0 (see docs/methods.md)")
    optimizer: Literal["adam", "sgd", "adadelta"] = Field(
        "adam", description="optimiser of the CQ fine-tuning")
    lr_decay: float = Field(0.7, gt=0, le=1, strict=True, allow_inf_nan=False,
                            description="learning rate factor per epoch")
    augment: bool = Field(False, strict=True,
                          description="shift and noise the training images while fine-tuning")
    keep_batchnorm: bool | None = Field(
        None, strict=True,
        description="fine-tune with BatchNorm unfolded; None: only at T = 1 (see docs)")
    fit_scale: bool = Field(
        True, strict=True,
        description="before fine-tuning, rescale each ReLU layer (function unchanged) "
                    "so its 99.9th-percentile activation sits at m (see docs/methods.md)")
    initial_membrane: float = Field(
        0.0, ge=0, lt=1, strict=True, allow_inf_nan=False,
        description="cq-if/cq-ctt: the IF neurons' u(0) as a fraction of θ; 0 is the paper's, "
                    "0.5 the half-threshold start (Bu et al., QCFS)")
    spike_finetune_epochs: int = Field(
        0, ge=0, le=500, strict=True,
        description="cq-if/cq-ctt: epochs of spike-aware fine-tuning through the IF network "
                    "before conversion (tandem learning; see docs/methods.md); 0 is the paper's "
                    "recipe")
    spike_learning_rate: float | None = Field(
        None, gt=0, le=10, strict=True, allow_inf_nan=False,
        description="learning rate of spike-aware fine-tuning; None: learning_rate")
    ctt_eta: float = Field(0.01, gt=0, le=10, strict=True, allow_inf_nan=False,
                           description="CTT step size eta")
    ctt_batches: int = Field(20, ge=1, le=100_000, strict=True,
                             description="calibration batches of threshold tuning (cq-ctt)")


class QCFSSchedule(BaseModel):
    """How a qcfs job trains: what a preset fixes unless the job gives the field itself."""

    model_config = ConfigDict(frozen=True)

    finetune_epochs: int
    spike_finetune_epochs: int
    augment: bool
    lr_decay: float


# fast: seconds on a small CNN (the demo's cnn-small at T = 1: 4 epochs, 6 s on 2 cores);
# thorough: minutes, what the mnist-7conv targets of docs/methods.md were measured with.
QCFS_PRESETS: dict[str, QCFSSchedule] = {
    "fast": QCFSSchedule(finetune_epochs=4, spike_finetune_epochs=0, augment=False,
                         lr_decay=0.7),
    "thorough": QCFSSchedule(finetune_epochs=30, spike_finetune_epochs=4, augment=True,
                             lr_decay=0.9),
}


class QCFSOptions(BaseModel):
    """Options of the qcfs method (Bu et al., ICLR 2022); see docs/methods.md.  Its optimiser
    is the CQ fine-tuning's (``cq.optimizer``)."""

    model_config = ConfigDict(extra="forbid")

    preset: Literal["fast", "thorough"] = Field(
        "fast", description="training schedule: fast = 4 QCFS epochs, no augmentation; "
                            "thorough = 30 augmented epochs (lr ×0.9 per epoch), then 4 "
                            "spike-aware epochs. A field given below overrides its preset")
    levels: int | None = Field(
        None, ge=1, le=4096, strict=True,
        description="L, quantisation levels between 0 and each layer's clip λ; None: "
                    "min(T, 8)")
    finetune_epochs: int | None = Field(
        None, ge=0, le=500, strict=True,
        description="epochs of fine-tuning with the QCFS activation (None: the preset's); "
                    "0 converts the upload with λ at the clip percentile, untrained")
    learning_rate: float = Field(1e-3, gt=0, le=10, strict=True, allow_inf_nan=False,
                                 description="learning rate of both QCFS fine-tunings")
    lr_decay: float | None = Field(
        None, gt=0, le=1, strict=True, allow_inf_nan=False,
        description="learning rate factor per epoch (None: the preset's)")
    augment: bool | None = Field(
        None, strict=True,
        description="shift and noise the training images (None: the preset's)")
    clip_percentile: float = Field(
        99.9, gt=0, le=100, strict=True, allow_inf_nan=False,
        description="each layer's λ starts at this percentile of its positive ReLU "
                    "activations on the calibration data")
    spike_finetune_epochs: int | None = Field(
        None, ge=0, le=500, strict=True,
        description="then epochs of spike-aware fine-tuning through the IF network at T "
                    "(θ = λ fixed, u(0) = θ/2), as for cq-if (None: the preset's)")

    def schedule(self) -> QCFSSchedule:
        """The preset's schedule with the fields this job gives in its place."""
        given = {field: getattr(self, field) for field in QCFSSchedule.model_fields
                 if getattr(self, field) is not None}
        return QCFS_PRESETS[self.preset].model_copy(update=given)


class JobSpec(BaseModel):
    """A conversion/evaluation job: the single input of ``core.pipeline.run``."""

    model_config = ConfigDict(extra="forbid")

    model_path: Annotated[Path, AfterValidator(_plain_path)] = Field(
        description="model file: .onnx, .safetensors or a state_dict")
    arch: Annotated[str | None, AfterValidator(_printable)] = Field(
        None, min_length=1, max_length=ARCH_MAX_CHARS, strict=True,
        description="zoo architecture for safetensors/state_dict")
    dataset: Annotated[str, AfterValidator(_printable)] = Field(
        "mnist-5k", min_length=1, max_length=MAX_NAME_CHARS, strict=True,
        description="dataset name, e.g. mnist-5k, digits, imagefolder:<name>")
    data_dir: Annotated[Path | None, AfterValidator(_plain_path)] = None
    methods: list[MethodName] = Field(
        default_factory=lambda: ["robust-norm"], min_length=1, max_length=len(METHODS),
        strict=True, json_schema_extra={"default": ["robust-norm"]},
        description="conversion methods to compare, each once: one simulation and one curve "
                    "per method")
    timesteps: int | None = Field(
        None, ge=1, le=4096, strict=True,
        description="T_max: one run reports every t <= T; None: m·L of a CQ-trained upload, "
                    "else 32")
    batch_size: int = Field(100, ge=1, le=4096, strict=True,
                            description="samples simulated together")
    calib_samples: int = Field(1000, ge=1, le=MAX_SAMPLES, strict=True,
                               description="training samples that calibrate the thresholds")
    eval_samples: int | None = Field(None, ge=1, le=MAX_SAMPLES, strict=True,
                                     description="None: the whole test split")
    seed: int = Field(0, ge=0, le=MAX_SEED, strict=True,
                      description=f"random seed, 0..{MAX_SEED} (2**32 - 1)")
    device: Literal["cpu", "cuda", "auto"] = Field(
        "auto", description="where to run; auto: CUDA when available")
    input_encoding: Literal["direct", "rate", "poisson"] = Field(
        "direct", description="input coding of the classic methods"
    )
    reset: Literal["subtract", "zero"] = Field(
        "subtract", description="membrane reset after a spike: subtract θ, or to zero")
    percentile: float = Field(99.9, gt=0, le=100, strict=True, allow_inf_nan=False,
                              description="robust-norm percentile")
    mean: list[FiniteFloat] | None = Field(
        None, min_length=1, max_length=MAX_CHANNELS, strict=True,
        description=f"per-channel input mean (at most {MAX_CHANNELS} finite numbers)")
    std: list[FiniteFloat] | None = Field(
        None, min_length=1, max_length=MAX_CHANNELS, strict=True,
        description=f"per-channel input std (at most {MAX_CHANNELS} positive numbers)")
    memory_budget_mb: int = Field(
        1024, ge=16, le=1_000_000, strict=True,
        description="memory the simulation may use for its chunk of time steps")
    cq: CQOptions = Field(default_factory=CQOptions)
    qcfs: QCFSOptions = Field(default_factory=QCFSOptions)
    potential_correction_batches: int = Field(
        0, ge=0, le=1000, strict=True,
        description="IF methods (classic, cq-if, cq-ctt): after conversion, correct each "
                    "layer's initial membrane per channel, layer by layer, so that its mean "
                    "output over T on this many calibration batches matches the reference "
                    "ANN's; 0: off")
    error_attribution: bool = Field(
        False, strict=True,
        description="IF methods: each layer's share of the accuracy lost at every t, from "
                    "hybrids whose first k IF layers run as ideal rate neurons (L more "
                    "simulations)")
    early_exit: bool = Field(
        False, strict=True,
        description="per-sample early exit: each sample stops at the first t whose output "
                    "margin reaches a threshold chosen on the calibration images; accuracy "
                    "against mean steps and SOPs (one more simulation, of at most 1000 "
                    "calibration images)")
    early_exit_tolerance: float = Field(
        0.005, ge=0, lt=1, strict=True, allow_inf_nan=False,
        description="early exit: the top-1 (a fraction) the operating point may lose on the "
                    "calibration images against reading every sample at T")
    energy_profile: ProfileName = Field(
        DEFAULT_PROFILE, description="the hardware the energy estimate assumes (Horowitz, "
                                     "45 nm): fp32, fp16, int32 or int8 arithmetic")
    target_accuracy: float | None = Field(
        None, gt=0, le=1, strict=True, allow_inf_nan=False,
        description="choice of T: report the smallest t at which each method reaches this "
                    "top-1 (a fraction), and recommend a method")
    max_gap: float | None = Field(
        None, ge=0, lt=1, strict=True, allow_inf_nan=False,
        description="choice of T with the target set to the ANN's top-1 less this gap "
                    "(a fraction: 0.01 is one point)")

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, methods: list[str]) -> list[str]:
        if len(set(methods)) != len(methods):
            raise ValueError("each method may appear once")
        return methods

    @model_validator(mode="after")
    def _one_target(self) -> JobSpec:
        if self.target_accuracy is not None and self.max_gap is not None:
            raise ValueError("give target_accuracy or max_gap, not both")
        return self

    @model_validator(mode="after")
    def _mean_std_pair(self) -> JobSpec:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("std entries must be positive")
        return self
