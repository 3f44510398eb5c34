"""Converted networks stored as JSON + safetensors, never pickle: how the shards of one job
share the networks that were converted (and fine-tuned) once.

A SpikingNetwork is stored as JSON (graph nodes, module classes and their plain attributes)
plus one safetensors file with every tensor.  Loading imports only classes from torch and
core, only nn.Module subclasses or the input encoders, and sets attributes to JSON values
and tensors: nothing is unpickled and no stored code runs.
"""

from __future__ import annotations

import builtins
import importlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save
from torch import fx, nn
from torch.fx.node import _get_qualified_name

from core.neurons import reset_state
from core.paths import atomic_write_bytes
from core.report import Latency
from core.snn import SpikingNetwork

NETWORK_FORMAT = 1
_ALLOWED_ROOTS = ("torch", "core")
_FUNCTION_ROOTS = ("torch", "core", "operator", "_operator", "math")
_BUILTIN_FUNCTIONS = {"getattr"}


class NotShareable(ValueError):
    """A converted network holds something that cannot be stored without pickle."""


def _module_fresh_keys() -> set[str]:

    return set(nn.Module().__dict__) - {"training"}


class _Encoder:
    """Turns modules, graphs and plain values into JSON, collecting tensors by key."""

    def __init__(self):
        self.tensors: dict[str, Any] = {}
        self.fresh = _module_fresh_keys()

    def tensor(self, value) -> dict:
        key = f"t{len(self.tensors)}"
        self.tensors[key] = value.detach().cpu().contiguous().clone()
        return {"tensor": key}

    def value(self, value) -> Any:

        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            return {"float": repr(value)}  # keeps inf and nan, and every bit
        if isinstance(value, nn.Parameter):
            return {"parameter": self.tensor(value)["tensor"], "grad": value.requires_grad}
        if isinstance(value, torch.Tensor):
            return self.tensor(value)
        if isinstance(value, tuple | torch.Size):
            return {"tuple": [self.value(v) for v in value]}
        if isinstance(value, list):
            return {"list": [self.value(v) for v in value]}
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise NotShareable("a dict with non-string keys")
            return {"dict": {k: self.value(v) for k, v in value.items()}}
        if isinstance(value, slice):
            return {"slice": [self.value(value.start), self.value(value.stop),
                              self.value(value.step)]}
        if isinstance(value, torch.dtype):
            return {"dtype": str(value).removeprefix("torch.")}
        if isinstance(value, torch.device):
            return {"device": str(value)}
        if value is Ellipsis:
            return {"ellipsis": True}
        if isinstance(value, fx.GraphModule):
            return {"graph_module": self.graph_module(value)}
        if isinstance(value, nn.Module):
            return {"module": self.module(value)}
        if type(value).__module__.startswith("core.encoders"):
            return {"object": _class_path(type(value)),
                    "state": {k: self.value(v) for k, v in vars(value).items()}}
        raise NotShareable(f"cannot store a {type(value).__qualname__} without pickle")

    def module(self, module) -> dict:

        if isinstance(module, fx.GraphModule):
            raise NotShareable("a graph module nested inside a module")
        return {
            "class": _class_path(type(module)),
            "attributes": {k: self.value(v) for k, v in vars(module).items()
                           if k not in self.fresh},
            "parameters": {k: None if v is None else self.value(v)
                           for k, v in module._parameters.items()},
            "buffers": {k: None if v is None else self.tensor(v)["tensor"]
                        for k, v in module._buffers.items()},
            "persistent": sorted(set(module._buffers) - module._non_persistent_buffers_set),
            "children": {k: None if v is None else self.value(v)
                         for k, v in module._modules.items()},
        }

    def graph_module(self, gm) -> dict:
        nodes = []
        for node in gm.graph.nodes:
            target = node.target
            if node.op == "call_function":
                target = _function_path(target)
            nodes.append({"name": node.name, "op": node.op, "target": target,
                          "args": self.value(_node_refs(node.args)),
                          "kwargs": self.value(_node_refs(node.kwargs))})
        modules = {name: self.value(child) for name, child in gm.named_children()}
        attributes = {}
        for node in gm.graph.nodes:  # get_attr targets that are tensors of the root
            if node.op == "get_attr" and "." not in node.target and node.target not in modules:
                attributes[node.target] = self.value(getattr(gm, node.target))
        return {"nodes": nodes, "children": modules, "attributes": attributes,
                "training": gm.training}


def _class_path(cls) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _function_path(function) -> str:

    try:
        return _get_qualified_name(function)
    except Exception as error:  # noqa: BLE001 - whatever fx cannot name, we cannot store
        raise NotShareable(f"cannot name the function {function!r}") from error


def _import_class(path: str):
    module_name, _, qualname = path.partition(":")
    if module_name.split(".")[0] not in _ALLOWED_ROOTS or "<" in qualname:
        raise ValueError(f"refusing to load class {path!r}")
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _import_function(path: str):
    root = path.split(".")[0]
    if root == "builtins" and path.removeprefix("builtins.") in _BUILTIN_FUNCTIONS:

        return getattr(builtins, path.removeprefix("builtins."))
    if root in _BUILTIN_FUNCTIONS and "." not in path:

        return getattr(builtins, path)
    if root not in _FUNCTION_ROOTS:
        raise ValueError(f"refusing to load function {path!r}")
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            obj = getattr(obj, part)
        if not callable(obj):
            raise ValueError(f"{path!r} is not a function")
        return obj
    raise ValueError(f"cannot import function {path!r}")


class _Decoder:
    def __init__(self, tensors: dict):
        self.tensors = tensors

    def value(self, data):

        if data is None or isinstance(data, bool | int | str):
            return data
        if not isinstance(data, dict) or len(data) not in (1, 2):
            raise ValueError("malformed network file")
        kind, payload = next(iter(data.items()))
        if kind == "float":
            return float(payload)
        if kind == "tensor":
            return self.tensors[payload]
        if kind == "parameter":
            return nn.Parameter(self.tensors[payload], requires_grad=bool(data["grad"]))
        if kind == "tuple":
            return tuple(self.value(v) for v in payload)
        if kind == "list":
            return [self.value(v) for v in payload]
        if kind == "dict":
            return {k: self.value(v) for k, v in payload.items()}
        if kind == "slice":
            return slice(*(self.value(v) for v in payload))
        if kind == "dtype":
            dtype = getattr(torch, payload)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"not a dtype: {payload!r}")
            return dtype
        if kind == "device":
            return torch.device(payload)
        if kind == "ellipsis":
            return Ellipsis
        if kind == "module":
            return self.module(payload)
        if kind == "graph_module":
            return self.graph_module(payload)
        if kind == "object":
            cls = _import_class(payload)
            if not cls.__module__.startswith("core.encoders"):
                raise ValueError(f"refusing to build {payload!r}")
            obj = cls.__new__(cls)
            obj.__dict__.update({k: self.value(v) for k, v in data["state"].items()})
            return obj
        raise ValueError(f"malformed network file: {kind!r}")

    def module(self, data):

        cls = _import_class(data["class"])
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"refusing to build {data['class']!r}")
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        for name, value in data["attributes"].items():
            object.__setattr__(module, name, self.value(value))
        for name, value in data["parameters"].items():
            module._parameters[name] = None if value is None else self.value(value)
        persistent = set(data["persistent"])
        for name, key in data["buffers"].items():
            module._buffers[name] = None if key is None else self.tensors[key]
            if name not in persistent:
                module._non_persistent_buffers_set.add(name)
        for name, value in data["children"].items():
            module._modules[name] = None if value is None else self.value(value)
        return module

    def graph_module(self, data):

        graph = fx.Graph()
        nodes: dict[str, fx.Node] = {}
        for entry in data["nodes"]:
            target = entry["target"]
            if entry["op"] == "call_function":
                target = _import_function(target)
            args = _with_nodes(self.value(entry["args"]), nodes)
            kwargs = _with_nodes(self.value(entry["kwargs"]), nodes)
            node = graph.create_node(entry["op"], target, args, kwargs, name=entry["name"])
            if node.name != entry["name"]:
                raise ValueError(f"node {entry['name']!r} could not keep its name")
            nodes[entry["name"]] = node
        root = nn.Module()
        for name, child in data["children"].items():
            root.add_module(name, self.value(child))
        for name, value in data["attributes"].items():
            setattr(root, name, self.value(value))
        gm = fx.GraphModule(root, graph)
        gm.train(data["training"])
        return gm


def _with_nodes(value, nodes: dict):
    """Stored node names (strings marked by the encoder) back to nodes."""
    if isinstance(value, tuple):
        return tuple(_with_nodes(v, nodes) for v in value)
    if isinstance(value, list):
        return [_with_nodes(v, nodes) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__node__"}:
            return nodes[value["__node__"]]
        return {k: _with_nodes(v, nodes) for k, v in value.items()}
    return value


def _node_refs(value):
    """Encode fx nodes inside args as {"__node__": name} before the value encoder sees them."""

    if isinstance(value, fx.Node):
        return {"__node__": value.name}
    if isinstance(value, tuple):
        return tuple(_node_refs(v) for v in value)
    if isinstance(value, list):
        return [_node_refs(v) for v in value]
    if isinstance(value, dict):
        return {k: _node_refs(v) for k, v in value.items()}
    return value


def save_network(snn, directory: Path, name: str) -> None:
    """Store a SpikingNetwork as ``name.json`` + ``name.safetensors`` in ``directory``.

    Raises NotShareable when it holds something that has no pickle-free form (the caller then
    evaluates unsharded)."""


    reset_state(snn.network)
    reset_state(snn.reference)
    encoder = _Encoder()
    document = {
        "format": NETWORK_FORMAT, "method": snn.method, "timesteps": snn.timesteps,
        "mode": snn.mode, "latency": snn.latency.model_dump(mode="json"),
        "parameters": json.loads(json.dumps(snn.parameters, default=_plain)),
        "network": encoder.graph_module(snn.network),
        "reference": encoder.graph_module(snn.reference),
        "encoder": encoder.value(snn.encoder),
    }
    directory = Path(directory)
    atomic_write_bytes(directory / f"{name}.safetensors", save(encoder.tensors))
    atomic_write_bytes(directory / f"{name}.json", json.dumps(document).encode())


def load_network(directory: Path, name: str, device=None):
    """The SpikingNetwork ``save_network`` stored (tensors on ``device``, default CPU)."""


    directory = Path(directory)
    document = json.loads((directory / f"{name}.json").read_text())
    if document.get("format") != NETWORK_FORMAT:
        raise ValueError(f"unknown network file format {document.get('format')!r}")
    tensors = load((directory / f"{name}.safetensors").read_bytes())
    if device is not None:
        tensors = {k: v.to(device) for k, v in tensors.items()}
    decoder = _Decoder(tensors)
    return SpikingNetwork(
        method=document["method"], network=decoder.graph_module(document["network"]),
        reference=decoder.graph_module(document["reference"]),
        encoder=decoder.value(document["encoder"]), timesteps=document["timesteps"],
        latency=Latency.model_validate(document["latency"]), mode=document["mode"],
        parameters=document["parameters"])


def _plain(value):
    """numpy scalars and the like in a method's parameters, as JSON numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise NotShareable(f"a method parameter of type {type(value).__qualname__}")
