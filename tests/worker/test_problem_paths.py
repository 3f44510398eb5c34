"""A failed job's problem detail names files, never the server directories they live in."""

from __future__ import annotations

from api.problems import make_problem
from api.settings import Settings
from worker.tasks import without_server_paths


def test_data_and_dataset_directories_are_cut_from_the_detail(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", datasets_dir=tmp_path / "sets",
                        redis_url=None, database_url=None)
    detail = (f"{settings.datasets_dir.resolve()}/cifar/data_batch_1 was refused; "
              f"{settings.data_dir}/uploads/abc/model.onnx is truncated; see GET /v1/models")
    cleaned = without_server_paths(make_problem(422, "x", "X", detail), settings).detail
    assert str(tmp_path) not in cleaned
    assert cleaned == ("cifar/data_batch_1 was refused; uploads/abc/model.onnx is truncated; "
                       "see GET /v1/models")
