"""wrcup.data.images: listing, loading (EXIF, errors), ImageFolder skipping, resize/crop helpers."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from wrcup.data import (
    IMAGE_EXTENSIONS,
    ImageFolder,
    ImageReadError,
    center_crop,
    list_images,
    load_image,
    load_label,
    resize_short_side,
)


def test_list_images_is_sorted_case_insensitive_and_recursive(tmp_path, fx):
    for name in ["b.PNG", "a.jpg", "sub/c.JpEg", "sub/deeper/d.webp", "e.bmp", "notes.txt", "f.gif"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.jpg", "b.PNG", "e.bmp", "sub/c.JpEg", "sub/deeper/d.webp"]
    flat = [p.name for p in list_images(tmp_path, recursive=False)]
    assert flat == ["a.jpg", "b.PNG", "e.bmp"]
    assert set(IMAGE_EXTENSIONS) == {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images(tmp_path / "nope")


def test_load_image_values_and_layout(tmp_path, fx):
    array = fx.write_rgb(tmp_path / "x.png", size=(5, 7))
    img = load_image(tmp_path / "x.png")
    assert img.dtype == torch.float32 and img.shape == (3, 5, 7)
    # exact: PNG is lossless, and channel c of pixel (y, x) is array[y, x, c] / 255
    assert torch.equal(img, torch.from_numpy(array).permute(2, 0, 1).float() / 255)
    # greyscale and palette files come back as 3 equal channels / RGB
    Image.fromarray(array[..., 0], "L").save(tmp_path / "g.png")
    g = load_image(tmp_path / "g.png")
    assert g.shape == (3, 5, 7) and torch.equal(g[0], g[2])


def test_load_image_applies_exif_orientation(tmp_path):
    # Orientation 6 = "rotate 90° clockwise to display": a stored 4×6 (H×W) image displays as 6×4.
    stored = np.zeros((4, 6, 3), dtype=np.uint8)
    stored[0, 0] = 255  # top-left of the stored image → top-right after a clockwise quarter turn
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "r.png", exif=exif)
    out = load_image(tmp_path / "r.png")
    assert out.shape == (3, 6, 4)
    assert out[0, 0, -1] == 1.0 and out[0, 0, 0] == 0.0


def test_load_image_errors_name_the_path(tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(ImageReadError, match="missing.jpg"):
        load_image(missing)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="broken.png"):
        load_image(broken)
    assert issubclass(ImageReadError, ValueError)


def test_load_label_keeps_palette_indices(tmp_path, fx):
    labels = np.arange(64, dtype=np.uint8).reshape(8, 8) % 21
    labels[0, 0] = 255
    fx.write_index(tmp_path / "p.png", labels, palette=True)
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = load_label(tmp_path / "p.png")
    assert out.dtype == torch.int64 and torch.equal(out, torch.from_numpy(labels.astype(np.int64)))
    fx.write_rgb(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match="rgb.png"):
        load_label(tmp_path / "rgb.png")


def test_image_folder_skips_unreadable_files_with_one_warning(tmp_path, fx):
    fx.write_rgb(tmp_path / "a.png", seed=1)
    fx.write_rgb(tmp_path / "sub" / "b.png", seed=2)
    (tmp_path / "bad1.jpg").write_bytes(b"garbage")
    (tmp_path / "bad2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ImageFolder(tmp_path)
    summary = [w for w in caught if "unreadable" in str(w.message)]
    assert len(summary) == 1 and "2 unreadable" in str(summary[0].message)
    assert len(ds) == 2 and sorted(p.name for p, _ in ds.skipped) == ["bad1.jpg", "bad2.png"]
    item = ds[1]
    assert item["path"].name == "b.png" and item["image"].shape == (3, 8, 8)
    ds_t = ImageFolder(tmp_path / "sub", transform=lambda x: x * 0)
    assert float(ds_t[0]["image"].abs().sum()) == 0.0


def test_image_folder_replaces_a_file_that_fails_late(tmp_path, fx):
    fx.write_rgb(tmp_path / "a.png", seed=1)
    fx.write_rgb(tmp_path / "b.png", seed=2)
    ds = ImageFolder(tmp_path)
    (tmp_path / "a.png").write_bytes(b"corrupted after indexing")
    with pytest.warns(RuntimeWarning, match="a.png"):
        item = ds[0]
    assert item["path"].name == "b.png"
    assert [p.name for p, _ in ds.skipped] == ["a.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second failure of the same dataset stays silent
        assert ds[0]["path"].name == "b.png"


def test_image_folder_with_no_images_raises(tmp_path):
    with pytest.raises(ValueError, match="no readable images"):
        ImageFolder(tmp_path)


def test_resize_short_side_and_center_crop():
    img = torch.arange(2 * 6 * 9, dtype=torch.float32).reshape(2, 6, 9)
    out = resize_short_side(img, 4)
    assert out.shape == (2, 4, 6)  # 9 · 4/6 = 6
    tall = torch.rand(1, 3, 10, 5)
    assert resize_short_side(tall, 2).shape == (1, 3, 4, 2)
    # integer labels: nearest keeps the label set
    labels = torch.randint(0, 5, (1, 6, 9))
    small = resize_short_side(labels, 3, interpolation="nearest")
    assert small.dtype == torch.int64 and set(small.unique().tolist()) <= set(labels.unique().tolist())
    with pytest.raises(ValueError, match="nearest"):
        resize_short_side(labels, 3)
    with pytest.raises(ValueError, match="size"):
        resize_short_side(img, 0)
    # centre crop: rows (6 − 4) / 2 = 1 .. 4, cols round((9 − 5) / 2) = 2 .. 6
    crop = center_crop(img, (4, 5))
    assert torch.equal(crop, img[:, 1:5, 2:7])
    assert center_crop(img, 6).shape == (2, 6, 6)
    with pytest.raises(ValueError, match="fit"):
        center_crop(img, 7)
