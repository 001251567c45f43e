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
    assert found == ["a.jpg", "b.PNG", "e.bmp", "f.gif", "sub/c.JpEg", "sub/deeper/d.webp"]
    flat = [p.name for p in list_images(tmp_path, recursive=False)]
    assert flat == ["a.jpg", "b.PNG", "e.bmp", "f.gif"]
    assert set(IMAGE_EXTENSIONS) == {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
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
    with pytest.raises(ImageReadError, match="missing.jpg.*no such file"):
        load_image(missing)
    folder = tmp_path / "photos.jpg"
    folder.mkdir()
    with pytest.raises(ImageReadError, match="photos.jpg.*a folder, not an image file"):
        load_image(folder)
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


# ----------------------------------------------------------------------------------- every mode Pillow opens
# Each case writes a file in one PIL mode and gives the float RGB it must read as, computed here in float64
# from the stored numbers (never through PIL's own conversions). Alpha is composited on white.
_RNG = np.random.default_rng(7)
_U8 = _RNG.integers(0, 256, size=(5, 6, 4), dtype=np.uint8)
_U16 = np.array([[0, 1, 255, 256, 65534, 65535], [1000, 2000, 30000, 40000, 50000, 60000]], dtype=np.uint16)


def _grey(g):
    return np.repeat(np.asarray(g, np.float64)[..., None], 3, axis=2)


def _over_white(rgb, alpha):
    a = np.asarray(alpha, np.float64)[..., None] / 255
    return np.asarray(rgb, np.float64) / 255 * a + (1 - a)


def _case_L(path):
    Image.fromarray(_U8[..., 0], "L").save(path.with_suffix(".png"))
    return path.with_suffix(".png"), _grey(_U8[..., 0] / 255)


def _case_RGB(path):
    Image.fromarray(_U8[..., :3], "RGB").save(path.with_suffix(".png"))
    return path.with_suffix(".png"), _U8[..., :3] / 255


def _case_RGBA(path):
    alpha = _U8[..., 3].copy()
    alpha[0, :3] = (0, 128, 255)  # fully transparent, half, opaque
    Image.fromarray(np.dstack([_U8[..., :3], alpha]), "RGBA").save(path.with_suffix(".png"))
    return path.with_suffix(".png"), _over_white(_U8[..., :3], alpha)


def _case_LA(path):
    alpha = _U8[..., 3].copy()
    alpha[0, 0] = 0
    Image.fromarray(np.dstack([_U8[..., 0], alpha]), "LA").save(path.with_suffix(".png"))
    return path.with_suffix(".png"), _over_white(np.repeat(_U8[..., :1], 3, axis=2), alpha)


def _case_P_transparency(path):
    index = _U8[..., 0] % 4
    palette = np.array([[255, 0, 0], [0, 0, 255], [10, 200, 30], [0, 0, 0]], np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette(palette.flatten().tolist())
    img.save(path.with_suffix(".png"), transparency=3)  # index 3 (black) is transparent: reads as white
    expected = palette[index] / 255
    expected[index == 3] = 1.0
    return path.with_suffix(".png"), expected


def _case_1(path):
    bits = _U8[..., 0] > 127
    Image.fromarray(bits).save(path.with_suffix(".png"))
    return path.with_suffix(".png"), _grey(bits.astype(np.float64))


def _case_I16(path):
    Image.fromarray(_U16).save(path.with_suffix(".png"))  # 16-bit greyscale PNG: PIL mode I;16
    return path.with_suffix(".png"), _grey(_U16 / 65535)


def _case_I16B(path):
    Image.fromarray(_U16.astype(">u2")).save(path.with_suffix(".tif"))
    return path.with_suffix(".tif"), _grey(_U16 / 65535)


def _case_I(path):
    Image.fromarray(_U16.astype(np.int32)).save(path.with_suffix(".tif"))  # 32-bit ints holding 16-bit data
    return path.with_suffix(".tif"), _grey(_U16 / 65535)


def _case_F(path):
    values = np.linspace(0, 1, 12, dtype=np.float32).reshape(2, 6)
    Image.fromarray(values).save(path.with_suffix(".tif"))
    return path.with_suffix(".tif"), _grey(values)


def _case_CMYK(path):
    Image.fromarray(_U8, "CMYK").save(path.with_suffix(".tif"))  # TIFF: lossless CMYK
    cmy, k = _U8[..., :3] / 255, _U8[..., 3:] / 255
    return path.with_suffix(".tif"), (1 - cmy) * (1 - k)


_MODE_CASES = {"L": _case_L, "RGB": _case_RGB, "RGBA": _case_RGBA, "LA": _case_LA, "P": _case_P_transparency,
               "1": _case_1, "I;16": _case_I16, "I;16B": _case_I16B, "I": _case_I, "F": _case_F, "CMYK": _case_CMYK}


@pytest.mark.parametrize("mode", list(_MODE_CASES))
def test_load_image_reads_every_pil_mode_as_float_rgb(tmp_path, mode):
    path, expected = _MODE_CASES[mode](tmp_path / "img")
    assert Image.open(path).mode == mode  # the file really is in that mode
    img = load_image(path)
    assert img.dtype == torch.float32 and img.shape == (3, *expected.shape[:2])
    torch.testing.assert_close(img, torch.from_numpy(expected).permute(2, 0, 1).float(), rtol=0, atol=1e-6)


def test_sixteen_bit_grey_keeps_its_precision(tmp_path):
    # the reported bug: I;16 read as all-white; and 8-bit rounding would merge 0 and 1/65535
    path, _ = _case_I16(tmp_path / "img")
    img = load_image(path)
    assert float(img.min()) == 0.0 and float(img.max()) == 1.0
    assert 0 < float(img[0, 0, 1]) < 1 / 255


def test_int32_and_float_images_outside_a_known_range_are_refused(tmp_path):
    Image.fromarray(np.array([[-5, 70000]], dtype=np.int32)).save(tmp_path / "i.tif")
    with pytest.raises(ImageReadError, match=r"i\.tif.*-5.*70000"):
        load_image(tmp_path / "i.tif")
    Image.fromarray(np.array([[0.0, 3.5]], dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageReadError, match=r"f\.tif.*\[0, 1\]"):
        load_image(tmp_path / "f.tif")
    Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32)).save(tmp_path / "n.tif")
    with pytest.raises(ImageReadError, match=r"n\.tif.*NaN"):
        load_image(tmp_path / "n.tif")


def test_cmyk_jpeg_reads_as_its_rgb_colour(tmp_path):
    # a flat CMYK patch through JPEG (lossy: a few levels of tolerance)
    cmyk = np.zeros((16, 16, 4), np.uint8) + np.array([10, 120, 200, 40], np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.jpg", quality=100)
    img = load_image(tmp_path / "c.jpg")
    expected = (1 - cmyk[0, 0, :3] / 255) * (1 - cmyk[0, 0, 3] / 255)
    torch.testing.assert_close(img[:, 8, 8].double(), torch.from_numpy(expected), rtol=0, atol=3 / 255)


def test_multi_frame_files_give_their_first_frame(tmp_path):
    red, blue = (Image.new("RGB", (6, 4), c) for c in ((255, 0, 0), (0, 0, 255)))
    red.save(tmp_path / "a.gif", save_all=True, append_images=[blue], duration=100, loop=0)
    red.save(tmp_path / "a.tif", save_all=True, append_images=[blue])
    for name in ("a.gif", "a.tif"):
        assert getattr(Image.open(tmp_path / name), "n_frames", 1) == 2
        img = load_image(tmp_path / name)
        assert img.shape == (3, 4, 6)
        torch.testing.assert_close(img[:, 2, 3], torch.tensor([1.0, 0.0, 0.0]), rtol=0, atol=2 / 255)


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    # Orientation 8 = "rotate 90° counter-clockwise to display": stored 16×32 (H×W) displays as 32×16
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:8, :8] = 255  # stored top-left block → bottom-left after a counter-clockwise quarter turn
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 8
    img.save(tmp_path / "r.jpg", exif=exif, quality=100)
    out = load_image(tmp_path / "r.jpg")
    assert out.shape == (3, 32, 16)
    assert out[:, -4, 4].min() > 0.9 and out[:, 4, 4].max() < 0.1


def test_truncated_zero_byte_and_oversized_files_raise_image_read_error(tmp_path, fx, monkeypatch):
    fx.write_rgb(tmp_path / "full.png", size=(64, 64))
    Image.open(tmp_path / "full.png").save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name in ("cut.jpg", "empty.jpg"):
        with pytest.raises(ImageReadError, match=name):
            load_image(tmp_path / name)
    # PIL refuses "decompression bombs" (more than twice MAX_IMAGE_PIXELS) with an error that is not an OSError
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match=r"full\.png.*pixels"):
        load_image(tmp_path / "full.png")


@pytest.mark.parametrize("suffix", [".tif", ".tiff", ".gif", ".webp", ".bmp", ".TIF", ".GIF"])
def test_every_format_that_loads_is_listed_in_folders(tmp_path, suffix):
    """One list of extensions: a folder lists every image format load_image reads."""
    from wrcup.data.images import IMAGE_EXTENSIONS, list_images

    path = tmp_path / f"picture{suffix}"
    Image.new("RGB", (5, 4), (10, 200, 30)).save(path, format={".tif": "TIFF", ".tiff": "TIFF", ".gif": "GIF",
                                                            ".webp": "WEBP", ".bmp": "BMP"}[suffix.lower()])
    assert load_image(path).shape == (3, 4, 5)
    assert list_images(tmp_path) == [path] and suffix.lower() in IMAGE_EXTENSIONS
