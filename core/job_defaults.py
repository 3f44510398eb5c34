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


def resolve(spec: JobSpec, found: CQDetection) -> tuple[JobSpec, dict[str, str]]:
    """``spec`` with every None default replaced, and why each value was chosen."""
    if found.is_cq:
        _require_consistent(spec, found)
        timesteps, epochs, encoding, why = _cq_upload_defaults(spec, found)
    else:
        timesteps, epochs, encoding, why = _general_defaults(spec)
    cq = spec.cq.model_copy(update={"finetune_epochs": epochs, "encoding": encoding})
    return spec.model_copy(update={"timesteps": timesteps, "cq": cq}), why


def _given(value, reason: str = "given in the job") -> tuple:
    return value, reason


def _general_defaults(spec: JobSpec) -> tuple[int, int, str, dict[str, str]]:
    timesteps, t_why = (_given(spec.timesteps) if spec.timesteps is not None else
                        (DEFAULT_TIMESTEPS, "default for a model that is not CQ-trained"))
    epochs, e_why = (_given(spec.cq.finetune_epochs) if spec.cq.finetune_epochs is not None
                     else (DEFAULT_FINETUNE_EPOCHS,
                           "default: the upload is not CQ-trained, so the paper's methods "
                           "fine-tune it with the CQ activation first"))
    encoding, c_why = (_given(spec.cq.encoding) if spec.cq.encoding is not None else
                       (DEFAULT_ENCODING, "default: the paper's VR input coding"))
    if epochs == 0 and any(m in PAPER_METHODS for m in spec.methods):
        raise InvalidSpec("finetune_epochs = 0 needs a CQ-trained model (clamp → ×L → floor → "
                          "÷L after every layer); this upload has plain activations. Give "
                          "finetune_epochs ≥ 1 (or leave it out) to fine-tune it")
    return timesteps, epochs, encoding, {"timesteps": t_why, "finetune_epochs": e_why,
                                         "encoding": c_why}


def _cq_upload_defaults(spec: JobSpec, found: CQDetection) -> tuple[int, int, str, dict]:
    shape = f"L = {found.levels}, m = {found.clamp_max:g}"
    timesteps, t_why = (_given(spec.timesteps) if spec.timesteps is not None else
                        (found.window, f"T = m·L = {found.window} read from the uploaded CQ "
                                       f"graph ({shape})"))
    epochs, e_why = (_given(spec.cq.finetune_epochs) if spec.cq.finetune_epochs is not None
                     else (0, "the upload is already CQ-trained: converted as it is"))
    coded = {"direct": "no VR/ICE coding at its input: it takes the raw pixels",
             "vr": "VR coding found at its input", "vr-ice": "ICE coding found at its input"}
    encoding, c_why = (_given(spec.cq.encoding) if spec.cq.encoding is not None else
                       (found.coding, f"the coding the upload was trained with "
                                      f"({coded[found.coding]})"))
    if epochs == 0 and encoding != found.coding:
        raise InvalidSpec(
            f"the uploaded CQ model was trained with {found.coding} input; converting it "
            f"with {encoding} input would feed it values it never saw. Leave the encoding "
            f"out (or set it to {found.coding}), or fine-tune with finetune_epochs ≥ 1")
    if found.coding == "vr-ice" and encoding != "vr-ice":
        raise InvalidSpec("the uploaded CQ model's first layer takes ICE-expanded channels; "
                          "only vr-ice input fits it")
    return timesteps, epochs, encoding, {"timesteps": t_why, "finetune_epochs": e_why,
                                         "encoding": c_why}


def _require_consistent(spec: JobSpec, found: CQDetection) -> None:
    """A CQ graph fixes L, m and (for the paper's methods) T; a spec may not contradict it."""
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
