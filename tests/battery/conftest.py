"""Battery models are trained once per session (a few seconds each on digits)."""

from __future__ import annotations

import pytest

from tests.battery.models import BATTERY, train_briefly


@pytest.fixture(scope="session")
def trained():
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = train_briefly(BATTERY[name])
        return cache[name]

    return get
