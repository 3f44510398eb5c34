"""The replace pass: activations become neurons, max pooling becomes spike-gated pooling."""

from __future__ import annotations

from collections.abc import Callable

from torch import fx, nn

from core.graph import patterns as P
from core.graph.analysis import is_activation
from core.graph.patterns import trace
from core.neurons import MultiStep, SpikeMaxPool

NeuronFactory = Callable[[str, nn.Module], nn.Module]


def to_spiking(gm: fx.GraphModule, neuron_for: NeuronFactory) -> fx.GraphModule:
    """A new graph whose activation modules are ``neuron_for(name, activation)``.

    Module names are kept, so statistics of the ANN's activation ``name`` and of the SNN's
    neuron ``name`` describe the same layer.
    """
    snn = trace(gm)
    for node in snn.graph.nodes:
        module = P.module_of(snn, node)
        if is_activation(module):
            snn.add_submodule(str(node.target), neuron_for(str(node.target), module))
        elif isinstance(module, nn.MaxPool2d):
            snn.add_submodule(str(node.target), SpikeMaxPool(module))
    snn.recompile()
    return snn.eval()


def terminal_activations(gm: fx.GraphModule) -> set[str]:
    """Activations from which the output is reached without passing another activation."""
    return {str(node.target) for node in gm.graph.nodes
            if is_activation(P.module_of(gm, node))
            and P.reaches(node, hit=lambda n: n.op == "output",
                          passes=lambda n: not is_activation(P.module_of(gm, n)))}


def nodes_downstream_of(gm: fx.GraphModule, names: set[str]) -> set[fx.Node]:
    """The named call_module nodes and every node that depends on one of them."""
    reached: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if (node.op == "call_module" and str(node.target) in names) \
                or any(arg in reached for arg in node.all_input_nodes):
            reached.add(node)
    return reached


def modules_downstream_of(gm: fx.GraphModule, names: set[str]) -> set[str]:
    """Names of call_module nodes reachable from the named modules' outputs."""
    return {str(n.target) for n in nodes_downstream_of(gm, names)
            if n.op == "call_module" and str(n.target) not in names}


def strip_leading_module(gm: fx.GraphModule, kind: type) -> tuple[fx.GraphModule, nn.Module | None]:
    """Remove the first module of type ``kind`` applied to the input; return it separately."""
    result = trace(gm)
    for node in result.graph.nodes:
        module = P.module_of(result, node)
        if isinstance(module, kind) and node.args and getattr(node.args[0], "op", None) \
                == "placeholder":
            node.replace_all_uses_with(node.args[0])
            result.graph.erase_node(node)
            return P.finish(result), module
    return result, None


def constant_input_is_safe(snn: fx.GraphModule) -> bool:
    """Whether the layers before the first neurons can run once on a constant input.

    True when no node combines a value computed from the input alone with one computed
    after a neuron (such a node would see tensors with different numbers of rows) and the
    output depends on a neuron.
    """
    analog: set[fx.Node] = set()
    for node in snn.graph.nodes:
        if node.op == "placeholder":
            analog.add(node)
            continue
        if isinstance(P.module_of(snn, node), MultiStep):
            continue
        data = P.data_inputs(node)
        from_input = [arg in analog for arg in data]
        if any(from_input) and not all(from_input):
            return False
        if data and all(from_input):
            analog.add(node)
    output = next(n for n in snn.graph.nodes if n.op == "output")
    return output not in analog
