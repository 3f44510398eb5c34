"""Fixtures shared by the service tests (tests/api, tests/worker, tests/integration).

Models are made here, not downloaded: a small MLP trained for a moment on the 8x8 digits
that ship with scikit-learn, exported with ``torch.onnx.export`` as a user would.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

DIGITS = "digits"
TRAIN_STEPS = 300


def _export_onnx(model, sample_shape: tuple[int, ...], path: Path) -> Path:
    import torch

    model.eval()
    batch = torch.export.Dim("batch")
    torch.onnx.export(model, (torch.zeros(2, *sample_shape),), str(path),
                      input_names=["x"], output_names=["logits"],
                      dynamic_shapes=({0: batch},), external_data=False)
    return path


def _train_digits_mlp(hidden_activation):
    """An MLP trained full-batch on the digits train split (about a second on 2 cores)."""
    import torch
    from torch import nn

    from core.datasets import load_dataset

    dataset = load_dataset(DIGITS, None)
    x = torch.from_numpy(dataset.train.x)
    y = torch.from_numpy(dataset.train.y).long()
    torch.manual_seed(0)
    features = int(torch.tensor(dataset.input_shape).prod())
    layers = [nn.Flatten(), nn.Linear(features, 48)]
    layers += [hidden_activation] if hidden_activation is not None else []
    model = nn.Sequential(*layers, nn.Linear(48, dataset.num_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only contend on a busy machine
    try:
        for _ in range(TRAIN_STEPS):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model, tuple(dataset.input_shape)


USER_EXPORTERS = ("default", "torchscript")


def linear_layer(weight, bias=None):
    """An nn.Linear with the given weight rows (and bias), for hand-computed networks."""
    import torch
    from torch import nn

    weight = torch.tensor(weight, dtype=torch.float32)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return layer


def hand_built_snn(modules: list, neurons: dict, steps: int):
    """The ANN ``modules`` (an nn.Sequential) as reference, and the same graph with
    ``neurons`` in place of the named modules: a spiking network with direct input whose
    spike trains a test can work out by hand."""
    import copy

    from torch import fx, nn

    from core.encoders import DirectEncoder
    from core.report import Latency
    from core.snn import SpikingNetwork

    reference = fx.symbolic_trace(nn.Sequential(*copy.deepcopy(modules))).eval()
    network = fx.symbolic_trace(nn.Sequential(*copy.deepcopy(modules)))
    for name, neuron in neurons.items():
        network.add_submodule(name, neuron)
    return SpikingNetwork(method="test", network=network.eval(), reference=reference,
                          encoder=DirectEncoder(), timesteps=steps,
                          latency=Latency(window=steps, end_to_end_steps=steps, anytime=True))


def export_trained_digits_mlp(folder: Path, exporter: str) -> Path:
    """A ReLU MLP trained on `digits`, exported as a user's torch exports it: ``default`` is
    ``torch.onnx.export``'s own default (the dynamo exporter in this torch), ``torchscript``
    the legacy exporter (``dynamo=False``)."""
    import torch
    from torch import nn

    model, shape = _train_digits_mlp(nn.ReLU())
    path = folder / f"mlp-{exporter}.onnx"
    options = {} if exporter == "default" else {"dynamo": False}
    torch.onnx.export(model.eval(), (torch.zeros(1, *shape),), str(path), **options)
    return path


@pytest.fixture(scope="session")
def digits_onnx(tmp_path_factory) -> Path:
    """A ReLU MLP for `digits` as ONNX, trained well above chance."""
    from torch import nn

    model, shape = _train_digits_mlp(nn.ReLU())
    return _export_onnx(model, shape, tmp_path_factory.mktemp("models") / "digits_mlp.onnx")


@pytest.fixture(scope="session")
def linear_onnx(tmp_path_factory) -> Path:
    """An MLP with no activation at all: loads fine, but nothing can become a spiking neuron."""
    model, shape = _train_digits_mlp(None)
    return _export_onnx(model, shape, tmp_path_factory.mktemp("models") / "linear.onnx")


@pytest.fixture
def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def settings(tmp_path):
    """Service settings on a temporary data directory: embedded SQLite store and broker."""
    from api.settings import Settings

    return Settings(data_dir=tmp_path / "data", redis_url=None, database_url=None,
                    max_upload_mb=1)


@pytest.fixture
def client(settings):
    """A TestClient of the app for ``settings`` (start-up, so migrations, included) that
    sends an API key of its own (``new_key`` makes more)."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    with TestClient(create_app(settings)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {new_api_key(test_client.app)}"
        yield test_client


def new_api_key(app, name: str = "test") -> str:
    """A fresh API key's secret in the app's job store."""
    from api.keys import create_key

    with app.state.sessions() as session:
        return create_key(session, name)[1]


@pytest.fixture
def new_key(client):
    """Make another API key of the client's app: ``new_key("name")`` → its secret."""
    return lambda name="other": new_api_key(client.app, name)


def _assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["code"] == code
    assert body["title"] and body["detail"] and body["type"].endswith(code)
    return body


@pytest.fixture
def assert_problem():
    """Check that a response is an RFC 9457 problem with our status and code."""
    return _assert_problem


@pytest.fixture
def stored_files(settings):
    """Files under the data directory's uploads/ and results/ (what a request left behind)."""
    def list_files() -> list[str]:
        return sorted(str(p.relative_to(settings.data_dir))
                      for folder in (settings.uploads_dir, settings.results_dir)
                      for p in folder.rglob("*") if p.is_file())
    return list_files


@pytest.fixture(scope="session")
def built_examples(tmp_path_factory) -> Path:
    """The real example models (``snnconv examples``: the demo CNN trained on mnist-5k and its
    CQ fine-tuned ONNX export), built once per session: about a minute."""
    from core.examples import EXAMPLES, build_examples

    directory = tmp_path_factory.mktemp("examples")
    paths = build_examples(directory, quiet=True)
    assert [path.name for path in paths] == [example.filename for example in EXAMPLES]
    return directory
