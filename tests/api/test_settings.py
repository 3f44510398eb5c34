"""Settings: env names, URL normalisation, and the refusal of unsafe combinations."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.settings import DEFAULT_SECRETS, Settings


def test_plain_env_names_for_redis_and_database(monkeypatch, tmp_path):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/snnconv")
    monkeypatch.setenv("SNNCONV_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SNNCONV_MAX_UPLOAD_MB", "7")
    settings = Settings()
    assert settings.broker_url == "redis://127.0.0.1:6379/3"
    assert settings.sqlalchemy_url == "postgresql+psycopg://u:p@db:5432/snnconv"
    assert settings.max_upload_bytes == 7 * 1024 * 1024
    assert settings.uploads_dir == tmp_path / "uploads"
    assert not settings.embedded


def test_embedded_defaults_live_in_the_data_dir(monkeypatch, tmp_path):
    for name in ("REDIS_URL", "DATABASE_URL", "SNNCONV_REDIS_URL", "SNNCONV_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.embedded
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path.resolve()}/broker.sqlite"
    assert settings.sqlalchemy_url == f"sqlite:///{tmp_path.resolve()}/snnconv.sqlite"


@pytest.mark.parametrize(
    ("soft", "hard", "visibility"), [(60, 60, 120), (90, 60, 120), (30, 120, 120)]
)
def test_time_limits_must_nest_below_the_visibility_timeout(soft, hard, visibility):
    with pytest.raises(ValidationError, match="soft_time_limit_s < hard_time_limit_s"):
        Settings(soft_time_limit_s=soft, hard_time_limit_s=hard,
                 visibility_timeout_s=visibility)


def test_production_refuses_wildcard_cors_and_the_embedded_broker():
    with pytest.raises(ValidationError, match="REDIS_URL"):
        Settings(environment="production", redis_url=None)
    with pytest.raises(ValidationError, match="CORS"):
        Settings(environment="production", redis_url="redis://r:6379/0", cors_origins=["*"])
    assert Settings(environment="production", redis_url="redis://r:6379/0").environment


@pytest.mark.parametrize("password", sorted(DEFAULT_SECRETS))
def test_production_refuses_a_default_database_password(password):
    url = f"postgresql://snnconv:{password}@postgres:5432/snnconv"
    with pytest.raises(ValidationError, match="password in DATABASE_URL .*POSTGRES_PASSWORD"):
        Settings(environment="production", redis_url="redis://r:6379/0", database_url=url)


def test_production_refuses_a_default_broker_password():
    with pytest.raises(ValidationError, match="password in REDIS_URL"):
        Settings(environment="production", redis_url="redis://:changethis@r:6379/0")


def test_production_accepts_a_secret_password_and_local_only_warns():
    secret = "postgresql://snnconv:s%40fe-Pa55@postgres:5432/snnconv"  # percent-encoded '@'
    production = Settings(environment="production", redis_url="redis://:x7Q@r:6379/0",
                          database_url=secret)
    assert production.sqlalchemy_url.endswith("//snnconv:s%40fe-Pa55@postgres:5432/snnconv")
    assert Settings(environment="production", redis_url="redis://r:6379/0",
                    database_url="postgresql://postgres@db/snnconv").database_url  # no password
    with pytest.warns(UserWarning, match="password in DATABASE_URL is 'snnconv'"):
        local = Settings(database_url="postgresql://snnconv:snnconv@127.0.0.1/snnconv")
    assert local.environment == "local"


def test_the_default_secret_check_decodes_the_password():
    with pytest.raises(ValidationError, match="'password'"):
        Settings(environment="production", redis_url="redis://r:6379/0",
                 database_url="postgresql://u:%70assword@db/snnconv")
