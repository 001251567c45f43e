"""The training-target cache: its entry names are pinned (a running job reads caches written by earlier code), and a
truncated or corrupt entry is detected, reported and recomputed instead of crashing the run."""
from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import load_file

from wrcup.train.trainer import TargetSource, TrainConfig, train

SMALL = dict(high_res=112, crop_align=28, crops=2, batch_size=2, progress=False, checkpoint_every=0, seed=3)


PINNED_NAME = "7ce78c8a83f8c34d9166"


class _StubBackbone:
    patch_size = 14

    def weights_identity(self) -> str:
        return "sha256:0123abcd"


class _StubImages:
    def __init__(self, paths):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)


def test_target_cache_file_names_are_pinned(tmp_path):
    """sha1("v2|<image sha256>|<backbone>|<weights id>|<high_res>|<crops>|<crop_align>|<seed>")[:20], written out
    as literals for one known image: any change of the key format would orphan every existing cache."""
    image = tmp_path / "known.jpg"
    image.write_bytes(b"wrcup target cache key")
    cfg = TrainConfig(data=["unused"], out=str(tmp_path), cache_targets=str(tmp_path / "cache"), high_res=448,
                      crops=4, crop_align=28, seed=0, loss_weights={"local": 1.0, "full": 1.0})
    source = TargetSource(_StubImages([image]), _StubBackbone(), cfg, torch.device("cpu"))
    # = sha1("v2|3d99a3881e1e48b417f6481f390ddc49b25eb1653c71b4a7c894bd14c34d1586|dinov2-s14-imgfocus|"
    #        "sha256:0123abcd|448|4|28|0")[:20]
    assert source._cache_file(0) == tmp_path / "cache" / f"{PINNED_NAME}.safetensors"
    assert source._full_file(0) == tmp_path / "cache" / f"{PINNED_NAME}.full.safetensors"


def test_a_second_seed_reuses_the_first_seeds_targets_with_target_seed(tmp_path):
    """--target-seed: the cache entry (and so the fixed crops) follow target_seed; seed alone moves them."""
    image = tmp_path / "known.jpg"
    image.write_bytes(b"wrcup target cache key")

    def name(**seeds):
        cfg = TrainConfig(data=["unused"], out=str(tmp_path), cache_targets=str(tmp_path / "cache"), high_res=448,
                          crops=4, crop_align=28, loss_weights={"local": 1.0, "full": 1.0}, **seeds)
        return TargetSource(_StubImages([image]), _StubBackbone(), cfg, torch.device("cpu"))._cache_file(0).stem

    assert name(seed=0) == name(seed=1, target_seed=0) == name(seed=0, target_seed=0) == PINNED_NAME
    assert name(seed=1) == name(seed=0, target_seed=1) != PINNED_NAME


@pytest.fixture(scope="module")
def pool(photo_pool):
    return photo_pool(2)


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else b"\0" * 8 + data[8:])


@pytest.mark.parametrize("how", ["truncated", "garbage-header"])
def test_damaged_entry_is_recomputed_before_training(tmp_path, pool, embedded_backbone, how):
    """Fill the cache with a run, damage one entry, run again: the entry is rewritten as it was, training finishes."""
    common = dict(data=["unused"], operator="wrc-reference", residual=True, steps=2, lr=1e-3, warmup=1,
                  cache_targets=str(tmp_path / "cache"), **SMALL)
    first = train(TrainConfig(out=str(tmp_path / "a"), **common), images=pool, backbone=embedded_backbone)
    entries = sorted((tmp_path / "cache").glob("*.safetensors"))
    assert len(entries) == len(pool)
    original = {k: v.clone() for k, v in load_file(str(entries[0])).items()}  # a copy: load_file maps the file
    _damage(entries[0], how)
    with pytest.warns(UserWarning, match="unusable"):
        again = train(TrainConfig(out=str(tmp_path / "b"), **common), images=pool, backbone=embedded_backbone)
    rewritten = load_file(str(entries[0]))
    assert rewritten.keys() == original.keys() and all(torch.equal(rewritten[k], original[k]) for k in original)
    assert again["param_checksum"] == first["param_checksum"]


def test_entry_damaged_after_filling_is_recomputed_by_batch(tmp_path, pool, embedded_backbone):
    cfg = TrainConfig(data=["unused"], out=str(tmp_path), cache_targets=str(tmp_path / "cache"),
                      loss_weights={"local": 1.0, "global": 1.0, "consistency": 1.0, "full": 1.0}, **SMALL)
    source = TargetSource(pool, embedded_backbone, cfg, torch.device("cpu"))
    source.fill_cache([0, 1], show_progress=False)
    expected = source.batch([0, 1], step=0)
    for path in (source._cache_file(1), source._full_file(0)):
        _damage(path, "truncated")
    with pytest.warns(UserWarning, match="unusable"):
        got = source.batch([0, 1], step=0)
    for a, b in zip(expected, got):
        assert (a is None and b is None) or torch.equal(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: read back without a report
        source.batch([0, 1], step=0)


def test_filling_the_crop_cache_runs_no_full_view_pass(tmp_path, pool):
    """The full-view target is cached in its own file: the crop entry's computation must not run (and throw away)
    the costliest backbone pass, the whole high-res view."""
    class CountingBackbone:
        patch_size, dim = 14, 8

        def __init__(self):
            self.sizes = []

        def weights_identity(self) -> str:
            return "sha256:counting"

        def __call__(self, x):
            self.sizes.append(x.shape[-1])
            return torch.zeros(x.shape[0], self.dim, x.shape[-2] // 14, x.shape[-1] // 14)

    backbone = CountingBackbone()
    cfg = TrainConfig(data=["unused"], out=str(tmp_path), cache_targets=str(tmp_path / "cache"), high_res=112,
                      crops=2, crop_align=28, loss_weights={"local": 1.0, "full": 1.0})
    source = TargetSource(pool, backbone, cfg, torch.device("cpu"))
    source.fill_cache([0], show_progress=False)
    assert sorted(backbone.sizes) == [56, 56, 112]  # low view, the crops (one call), the full view once
