"""Fixtures shared by the training tests."""
from __future__ import annotations

import shutil

import pytest

from wrcup.train.trainer import ImagePool


@pytest.fixture(scope="session")
def photo_pool(tmp_path_factory, real_photos):
    """``photo_pool(n)`` → an image pool of the first ``n`` real photos, copied into a fresh folder."""
    def make(n: int) -> ImagePool:
        folder = tmp_path_factory.mktemp("photos")
        for p in real_photos[:n]:
            shutil.copy(p, folder / p.name)
        return ImagePool([str(folder)])
    return make


@pytest.fixture(scope="module")
def pool(photo_pool):
    """An image pool of four real photos (modules that need another pool define their own ``pool``)."""
    return photo_pool(4)
