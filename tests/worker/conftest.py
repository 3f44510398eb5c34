"""Fixtures shared by the worker's task tests."""

from __future__ import annotations

import pytest

from api.db import session_factory


@pytest.fixture
def sessions(client):
    return session_factory(client.app.state.engine)
