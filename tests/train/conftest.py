"""Fixtures shared by the training tests."""
from __future__ import annotations

import shutil

import pytest

from wrcup.train.trainer import ImagePool


@pytest.fixture(scope="module")
def pool(tmp_path_factory, real_photos):
    """An image pool of four real photos (modules that need another pool define their own ``pool``)."""
    folder = tmp_path_factory.mktemp("photos")
    for p in real_photos[:4]:
        shutil.copy(p, folder / p.name)
    return ImagePool([str(folder)])
