"""Operation counts and the energy estimate (per-operation energies: ``core.hardware``).

E_ANN = E_MAC · Σ_l MAC_l.   E_SNN(t) = E_MAC · MAC_analog + E_AC · Σ_{τ≤t} SOP(τ),
SOP(τ) = Σ_l Σ_i e_i^l(τ) · fanout_i^l, where e_i^l(τ) is the number of spike events arriving
at input i of synaptic layer l at step τ and fanout_i^l the number of synapses (non-zero
weights) it drives.  Layers fed by the analog input (direct encoding) compute the same
currents at every step, so they are counted once, as MACs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from core.graph import patterns as P
from core.graph.analysis import is_activation
from core.hardware import PROFILES, quantised_ann_profile, spike_count_bits
from core.neurons import is_neuron
from core.report import EnergyModel, QuantisedAnn


def energy_model(analog_input: bool, profile: str) -> EnergyModel:
    """The hardware profile's constants and the assumptions stated in every report."""
    hardware = PROFILES[profile]
    assumptions = [
        "ANN: every multiply-accumulate of Conv, Linear and pooling layers costs E_MAC",
        "SNN: every spike event costs one accumulate (E_AC) per synapse it reaches",
        "memory access, membrane updates and data movement are not counted",
    ]
    if analog_input:
        assumptions.append("direct (analog) input: layers fed by the input are computed once "
                           "and counted as MACs")
    assumptions.append("quantised ANN baseline: ⌈log2(T+1)⌉-bit activations and 8-bit weights "
                       "on an 8-bit integer MAC (a 32-bit one above 8 bits)")
    return EnergyModel(profile=hardware.name, e_mac_pj=hardware.e_mac_pj,
                       e_ac_pj=hardware.e_ac_pj, source=hardware.source,
                       assumptions=assumptions)


def quantised_ann(macs: int, timesteps: int) -> QuantisedAnn:
    """The baseline an SNN of T steps should beat: the ANN at ⌈log2(T+1)⌉-bit activations."""
    bits = spike_count_bits(timesteps)
    hardware = quantised_ann_profile(bits)
    return QuantisedAnn(bits=bits, profile=hardware.name, e_mac_pj=hardware.e_mac_pj,
                        energy_uj=hardware.microjoules(macs=macs))


def device_of(module: nn.Module) -> torch.device:
    """Where a module's parameters (or buffers) live; CPU for a module with neither."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def input_shapes(gm: fx.GraphModule, sample_shape: tuple[int, ...]) -> dict[str, torch.Size]:
    """The input shape (batch 1) of every call_module node, by module name."""
    ShapeProp(gm).propagate(torch.zeros(1, *sample_shape, device=device_of(gm)))
    shapes = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(node.args[0], fx.Node):
            shapes[str(node.target)] = node.args[0].meta["tensor_meta"].shape
    return shapes


def _connections(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module applied with every non-zero weight set to one and no bias."""
    if isinstance(module, nn.Linear):
        return F.linear(x, (module.weight != 0).float())
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        conv = F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d
        padding = module.padding if isinstance(module.padding, str) else module.padding
        return conv(x, (module.weight != 0).float(), None, module.stride, padding,
                    module.dilation, module.groups)
    if isinstance(module, nn.AvgPool2d):
        kernel = nn.modules.utils._pair(module.kernel_size)
        return F.avg_pool2d(x, kernel, module.stride, module.padding, module.ceil_mode,
                            count_include_pad=True) * (kernel[0] * kernel[1])
    if isinstance(module, nn.AdaptiveAvgPool2d):
        pooled = F.adaptive_avg_pool2d(x, module.output_size)
        return pooled * (x.shape[-1] * x.shape[-2] / (pooled.shape[-1] * pooled.shape[-2]))
    raise TypeError(f"not a synaptic module: {type(module).__name__}")


def fanout_map(module: nn.Module, shape: torch.Size) -> torch.Tensor:
    """Synapses driven by each input element (shape without the batch dimension), on the CPU."""
    x = torch.ones(shape, device=device_of(module), requires_grad=True)
    with torch.enable_grad():
        _connections(module, x).sum().backward()
    return x.grad[0].detach().cpu()


def synaptic_fanouts(gm: fx.GraphModule, sample_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Fan-out maps of every synaptic module (Conv, Linear, average pooling)."""
    shapes = input_shapes(gm, sample_shape)
    return {name: fanout_map(gm.get_submodule(name), shapes[name])
            for name, module in gm.named_modules()
            if isinstance(module, P.SYNAPTIC_MODULES) and name in shapes}


def count_macs(fanouts: dict[str, torch.Tensor]) -> dict[str, int]:
    """MACs per sample of each synaptic layer: all of its synapses are used once."""
    return {name: int(fanout.sum().item()) for name, fanout in fanouts.items()}


def analog_layers(gm: fx.GraphModule) -> set[str]:
    """Synaptic modules reached from the input without passing a spiking layer."""
    reached, result = set(), set()
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            reached.add(node)
            continue
        module = P.module_of(gm, node)
        if is_activation(module) or is_neuron(module):
            continue
        if any(arg in reached for arg in node.all_input_nodes):
            reached.add(node)
            if isinstance(module, P.SYNAPTIC_MODULES):
                result.add(str(node.target))
    return result


def microjoules(profile: str, macs: float = 0.0, accumulates: float = 0.0) -> float:
    return PROFILES[profile].microjoules(macs, accumulates)
