"""Uploads are staged with a streamed size cap and leave nothing behind when refused."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from api import files
from core.errors import ModelRejected


async def _aiter(chunks):
    for chunk in chunks:
        yield chunk


def _stage(chunks, directory, limit):
    return asyncio.run(files.stage_upload(_aiter(chunks), directory, ".onnx", limit))


def test_stage_then_accept_moves_the_file_atomically(tmp_path):
    staged = _stage([b"abc", b"def"], tmp_path / "up", limit=10)
    assert staged.size_bytes == 6
    assert staged.sha256 == hashlib.sha256(b"abcdef").hexdigest()
    final = files.accept_upload(staged, tmp_path / "up" / "m1")
    assert final.read_bytes() == b"abcdef"
    assert final.name == "model.onnx"
    assert sorted(p.name for p in (tmp_path / "up").iterdir()) == ["m1"]


def test_over_the_limit_is_refused_with_code_too_large_and_no_file(tmp_path):
    with pytest.raises(ModelRejected) as refused:
        _stage([b"x" * 6, b"y" * 6], tmp_path, limit=10)
    assert refused.value.code == "too-large"
    assert list(tmp_path.iterdir()) == []


def test_empty_upload_is_refused_and_removed(tmp_path):
    with pytest.raises(ModelRejected, match="empty"):
        _stage([], tmp_path, limit=10)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("filename", "suffix"),
    [("net.ONNX", ".onnx"), ("w.safetensors", ".safetensors"), ("../../etc/passwd", ""),
     (None, ""), ("a.b c", ""), ("model", "")],
)
def test_safe_suffix(filename, suffix):
    assert files.safe_suffix(filename) == suffix
