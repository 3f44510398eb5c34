"""POST /v1/models with an ONNX file and its external data: two parts, a zip or a tar.

Only the files of the same upload are read, one self-contained model.onnx is stored, and a
refusal leaves nothing in the storage area (no staging folder either).
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto

DATA_NAME = "m.onnx.data"


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, bytes]:
    """``torch.onnx.export(model, (x,), "m.onnx")`` with every default: m.onnx + m.onnx.data."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 10)).eval()
    path = tmp_path_factory.mktemp("pair") / "m.onnx"
    torch.onnx.export(model, (torch.randn(2, 1, 8, 8),), str(path))
    files = {"m.onnx": path.read_bytes(), DATA_NAME: (path.parent / DATA_NAME).read_bytes()}
    assert _external_locations(files["m.onnx"]) == {DATA_NAME}
    return files


def _external_locations(data: bytes) -> set[str]:
    model = onnx.load_model_from_string(data)
    return {entry.value for t in model.graph.initializer
            if t.data_location == TensorProto.EXTERNAL
            for entry in t.external_data if entry.key == "location"}


def _relocated(onnx_bytes: bytes, location: str) -> bytes:
    """The model with every external tensor's location rewritten to ``location``."""
    model = onnx.load_model_from_string(onnx_bytes)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    return model.SerializeToString()


def _post(client, files: dict[str, bytes], **form):
    parts = [("file", (name, data, "application/octet-stream")) for name, data in files.items()]
    return client.post("/v1/models", files=parts, data=form)


def _zip(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def nothing_left(settings, stored_files):
    """Assert that a refused upload left no file and no staging folder behind."""
    def check() -> None:
        assert stored_files() == []
        uploads = settings.uploads_dir
        assert not uploads.exists() or list(uploads.iterdir()) == []
    return check


def _assert_stored_self_contained(client, settings, response, stored_files) -> dict:
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["format"] == "onnx" and model["input_shape"] == [1, 8, 8]
    assert stored_files() == [f"uploads/{model['id']}/model.onnx"]
    stored = Path(settings.uploads_dir, model["id"], "model.onnx").read_bytes()
    assert _external_locations(stored) == set()
    assert model["size_bytes"] == len(stored)
    assert client.get(f"/v1/models/{model['id']}").json() == model
    assert [p.name for p in settings.uploads_dir.iterdir()] == [model["id"]]
    return model


def test_pair_as_two_file_parts_is_stored_as_one_model(client, settings, pair, stored_files):
    response = _post(client, pair, name="default export")

    model = _assert_stored_self_contained(client, settings, response, stored_files)
    assert model["name"] == "default export" and model["preflight"]["convertible"] is True


@pytest.mark.parametrize(("pack", "filename"), [(_zip, "pair.zip"), (_tar, "pair.tar")])
def test_pair_as_one_archive_is_stored_as_one_model(client, settings, pair, stored_files,
                                                    pack, filename):
    response = _post(client, {filename: pack(pair)})

    model = _assert_stored_self_contained(client, settings, response, stored_files)
    assert model["name"] == "m.onnx"


def test_onnx_without_its_data_file_names_the_missing_file(client, pair, assert_problem,
                                                           nothing_left):
    response = _post(client, {"m.onnx": pair["m.onnx"]})

    body = assert_problem(response, 422, "external-data-missing")
    assert f"'{DATA_NAME}'" in body["detail"] and "external_data=False" in body["detail"]
    assert "save_as_external_data=False" in body["detail"]
    nothing_left()


@pytest.mark.parametrize("location", ["../x", "/etc/passwd", "sub/x.data"])
def test_external_location_escaping_the_upload_is_refused(client, pair, assert_problem,
                                                          nothing_left, location):
    files = {"m.onnx": _relocated(pair["m.onnx"], location), DATA_NAME: pair[DATA_NAME]}

    body = assert_problem(_post(client, files), 422, "external-data-path")

    assert repr(location) in body["detail"] and "files sent with it" in body["detail"]
    nothing_left()


@pytest.mark.parametrize(("members", "links"), [
    ({"../evil": b"x"}, None),
    ({"sub/m.onnx.data": b"x"}, None),
    ({}, {DATA_NAME: "/etc/passwd"}),
])
def test_archive_with_paths_or_links_is_refused(client, pair, assert_problem, nothing_left,
                                                members, links):
    archive = _zip({"m.onnx": pair["m.onnx"], **members}, links)

    body = assert_problem(_post(client, {"pair.zip": archive}), 422, "archive-member")

    assert "zip -j" in body["detail"]
    nothing_left()


def test_tar_with_a_symlink_member_is_refused(client, pair, assert_problem, nothing_left):
    buffer = io.BytesIO(_tar({"m.onnx": pair["m.onnx"]}))
    with tarfile.open(fileobj=buffer, mode="a") as archive:
        link = tarfile.TarInfo(DATA_NAME)
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)

    body = assert_problem(_post(client, {"pair.tar": buffer.getvalue()}), 422,
                          "archive-member")

    assert "link" in body["detail"]
    nothing_left()


def _post_raw(client, files: dict[str, bytes]):
    """A multipart POST with the file names sent byte for byte (httpx would escape some)."""
    boundary = "snnconv-test-boundary"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        for name, data in files.items()) + f"--{boundary}--\r\n".encode()
    return client.post("/v1/models", content=body,
                       headers={"content-type": f"multipart/form-data; boundary={boundary}"})


@pytest.mark.parametrize("filename", ["../m.onnx.data", "sub/m.onnx.data", "/tmp/m.onnx.data",
                                      "..", "m.onnx\x01.data"])
def test_part_with_a_path_in_its_name_is_refused(client, pair, assert_problem, nothing_left,
                                                 filename):
    files = {"m.onnx": pair["m.onnx"], filename: pair[DATA_NAME]}

    body = assert_problem(_post_raw(client, files), 422, "upload-name")

    assert "plain name" in body["detail"]
    nothing_left()


def test_parts_together_over_the_cap_are_413(client, pair, assert_problem, nothing_left):
    each = 540 * 1024  # each part fits the 1 MiB cap, together they do not
    files = {"m.onnx": pair["m.onnx"], "a.bin": b"\0" * each, "b.bin": b"\0" * each}

    assert_problem(_post(client, files), 413, "too-large")

    nothing_left()


def test_zip_bomb_is_refused_by_its_declared_size(client, pair, assert_problem, nothing_left):
    archive = _zip({"m.onnx": pair["m.onnx"], DATA_NAME: b"\0" * (4 << 20)})
    assert len(archive) < 64 * 1024

    assert_problem(_post(client, {"pair.zip": archive}), 413, "too-large")

    nothing_left()


def test_several_parts_without_one_onnx_are_refused(client, pair, assert_problem,
                                                    nothing_left):
    files = {"a.data": pair[DATA_NAME], "b.data": pair[DATA_NAME]}

    assert_problem(_post(client, files), 422, "upload-parts")

    nothing_left()
