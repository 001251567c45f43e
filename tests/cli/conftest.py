"""CLI fixtures: the shipped model loaded once per session, a guard that the model is never loaded, tmpfs mounts."""
from __future__ import annotations

import subprocess

import pytest


@pytest.fixture(scope="session")
def _shipped_models():
    return {}


@pytest.fixture
def fast_load(monkeypatch, _shipped_models):
    """``wrcup.load`` memoised for the test session (the model is frozen, so sharing it is safe); loading the
    backbone anew in every CLI call would cost seconds each."""
    import wrcup
    from wrcup.models.bundle import DEFAULT_CHECKPOINT

    real = wrcup.load

    def load(name_or_path=DEFAULT_CHECKPOINT, device=None, backbone_weights=None, **kw):
        key = (str(name_or_path), str(device), backbone_weights, tuple(sorted(kw.items())))
        if key not in _shipped_models:
            _shipped_models[key] = real(name_or_path, device=device, backbone_weights=backbone_weights, **kw)
        return _shipped_models[key]

    monkeypatch.setattr(wrcup, "load", load)


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the command gets as far as loading the model."""
    import wrcup

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was detected")

    monkeypatch.setattr(wrcup, "load", refuse)


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size, read_only=False)`` → the path of a fresh tmpfs mount (unmounted after the test).

    Skips when this process may not mount (mounting needs root with CAP_SYS_ADMIN, e.g. not in an unprivileged
    container); chmod cannot stand in for it because root ignores file permissions."""
    mounted = []

    def mount(size: str, read_only: bool = False):
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")
        mounted.append(point)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", str(point)], check=False)
