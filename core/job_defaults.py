"""The job's automatic defaults, decided from what the uploaded graph turned out to be.

A spec leaves ``timesteps``, ``cq.finetune_epochs`` and ``cq.encoding`` as None to mean "the
right value for this model".  For an upload that is already CQ-trained the right values are
read from the graph: its own T = m·L, no fine-tuning, and the input coding it was trained
with.  Anything else gets the service's general defaults.  Every choice comes with the reason
it was made, and that goes into the report.
"""

from __future__ import annotations

from core.errors import InvalidSpec
from core.spec import PAPER_METHODS, JobSpec
from core.train.recognise import CQDetection

DEFAULT_TIMESTEPS = 32
DEFAULT_FINETUNE_EPOCHS = 2
DEFAULT_ENCODING = "vr"


GIVEN = "given in the job"
_CODED = {"direct": "no VR/ICE coding at its input: it takes the raw pixels",
          "vr": "VR coding found at its input", "vr-ice": "ICE coding found at its input"}


def resolve(spec: JobSpec, found: CQDetection) -> tuple[JobSpec, dict[str, str]]:
    """``spec`` with every None default replaced, and why each value was chosen."""
    defaults = _cq_upload_defaults(found) if found.is_cq else _general_defaults()
    given = {"timesteps": spec.timesteps, "finetune_epochs": spec.cq.finetune_epochs,
             "encoding": spec.cq.encoding}
    chosen = {field: (given[field], GIVEN) if given[field] is not None else default
              for field, default in defaults.items()}
    values = {field: value for field, (value, _) in chosen.items()}
    if found.is_cq:
        _require_consistent(spec, found, values["finetune_epochs"], values["encoding"])
    elif values["finetune_epochs"] == 0 and any(m in PAPER_METHODS for m in spec.methods):
        raise InvalidSpec("finetune_epochs = 0 needs a CQ-trained model (clamp → ×L → floor → "
                          "÷L after every layer); this upload has plain activations. Give "
                          "finetune_epochs ≥ 1 (or leave it out) to fine-tune it")
    cq = spec.cq.model_copy(update={"finetune_epochs": values["finetune_epochs"],
                                    "encoding": values["encoding"]})
    resolved = spec.model_copy(update={"timesteps": values["timesteps"], "cq": cq})
    return resolved, {field: why for field, (_, why) in chosen.items()}


def _general_defaults() -> dict[str, tuple]:
    return {
        "timesteps": (DEFAULT_TIMESTEPS, "default for a model that is not CQ-trained"),
        "finetune_epochs": (DEFAULT_FINETUNE_EPOCHS,
                            "default: the upload is not CQ-trained, so the paper's methods "
                            "fine-tune it with the CQ activation first"),
        "encoding": (DEFAULT_ENCODING, "default: the paper's VR input coding"),
    }


def _cq_upload_defaults(found: CQDetection) -> dict[str, tuple]:
    shape = f"L = {found.levels}, m = {found.clamp_max:g}"
    return {
        "timesteps": (found.window,
                      f"T = m·L = {found.window} read from the uploaded CQ graph ({shape})"),
        "finetune_epochs": (0, "the upload is already CQ-trained: converted as it is"),
        "encoding": (found.coding,
                     f"the coding the upload was trained with ({_CODED[found.coding]})"),
    }


def _require_consistent(spec: JobSpec, found: CQDetection, epochs: int, encoding: str) -> None:
    """A CQ graph fixes L, m, its input coding and (for the paper's methods) T; a spec may not
    contradict them."""
    shape = f"L = {found.levels}, m = {found.clamp_max:g}, so T = m·L = {found.window}"
    if spec.cq.levels is not None and spec.cq.levels != found.levels:
        raise InvalidSpec(f"levels = {spec.cq.levels} contradicts the uploaded CQ graph "
                          f"({shape}); leave levels out")
    if spec.cq.clamp_max is not None and abs(spec.cq.clamp_max - found.clamp_max) > 1e-6:
        raise InvalidSpec(f"clamp_max = {spec.cq.clamp_max:g} contradicts the uploaded CQ "
                          f"graph ({shape}); leave clamp_max out")
    suite = [m for m in spec.methods if m in PAPER_METHODS]
    if suite and spec.timesteps is not None and spec.timesteps != found.window:
        raise InvalidSpec(
            f"timesteps = {spec.timesteps} contradicts the uploaded CQ graph ({shape}), which "
            f"{', '.join(suite)} convert exactly at T = {found.window}; leave timesteps out "
            f"or give {found.window}")
    if epochs == 0 and encoding != found.coding:
        raise InvalidSpec(
            f"the uploaded CQ model was trained with {found.coding} input; converting it "
            f"with {encoding} input would feed it values it never saw. Leave the encoding "
            f"out (or set it to {found.coding}), or fine-tune with finetune_epochs ≥ 1")
    if found.coding == "vr-ice" and encoding != "vr-ice":
        raise InvalidSpec("the uploaded CQ model's first layer takes ICE-expanded channels; "
                          "only vr-ice input fits it")
