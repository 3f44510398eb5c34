"""The pre-flight compatibility report: what conversion will do with every node of a model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

NodeStatus = Literal["converted", "passed-through", "removed", "unsupported"]


class NodeVerdict(BaseModel):
    name: str
    op: str = Field(description="operation, e.g. Conv2d, relu, add, max_pool2d")
    status: NodeStatus
    detail: str = ""


class PreflightReport(BaseModel):
    format: str = Field(description="onnx | safetensors | state_dict | module")
    input_shape: list[int] = Field(description="one sample's shape, e.g. [1, 28, 28]")
    num_outputs: int | None = None
    convertible: bool
    spiking_layers: int = Field(description="activations that become spiking neurons")
    cq_layers: int = Field(0, description="of which CQ (clamp+floor) activations")
    nodes: list[NodeVerdict]
    problems: list[str] = Field(default_factory=list)
