"""The one cache directory: SNNCONV_CACHE, else XDG_CACHE_HOME/snnconv, else ~/.cache/snnconv."""

from __future__ import annotations

from pathlib import Path

from core.paths import cache_dir


def test_snnconv_cache_wins_over_xdg(tmp_path):
    env = {"SNNCONV_CACHE": str(tmp_path / "mine"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert cache_dir(env) == tmp_path / "mine"


def test_xdg_cache_home_then_the_home_directory(tmp_path):
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "snnconv"
    home = Path.home() / ".cache" / "snnconv"
    assert cache_dir({}) == home
    assert cache_dir({"XDG_CACHE_HOME": "relative/dir", "SNNCONV_CACHE": ""}) == home


def test_the_demo_and_the_benchmarks_share_it(monkeypatch, tmp_path):
    import benchmarks.common
    import core.demo

    assert benchmarks.common.DEFAULT_CACHE == cache_dir() / "bench"  # read at import
    assert core.demo.cache_dir is cache_dir  # the demo has no copy of its own
    monkeypatch.setenv("SNNCONV_CACHE", str(tmp_path))
    assert core.demo.cache_dir() == tmp_path
