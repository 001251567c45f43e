"""Feature PCA and similarity maps against direct computations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wrcup.viz import feature_pca, save_comparison_figure, similarity_map


def test_similarity_map_is_cosine_to_the_query_cell():
    f = torch.randn(8, 4, 6, dtype=torch.float64)
    # pixel centre of cell (row 2, col 3) in a 40×60 image with 10-px cells
    sim = similarity_map(f, (35.0, 25.0), (40, 60))
    expected = F.cosine_similarity(f, f[:, 2:3, 3:4], dim=0)
    torch.testing.assert_close(sim, expected.float(), rtol=1e-5, atol=1e-5)
    assert sim[2, 3] == pytest.approx(1.0, abs=1e-5)


def test_similarity_point_outside_raises():
    with pytest.raises(ValueError, match="outside the image"):
        similarity_map(torch.randn(3, 2, 2), (5, 99), (10, 10))


def test_pca_shares_one_basis_between_maps():
    low = torch.randn(16, 4, 4)
    high = F.interpolate(low[None], scale_factor=2, mode="nearest")[0]
    a, b = feature_pca(low, high)
    assert a.shape == (3, 4, 4) and b.shape == (3, 8, 8)
    assert a.min() >= 0 and a.max() <= 1
    # the same feature vector gets the same colour in both maps
    torch.testing.assert_close(F.interpolate(a[None], scale_factor=2, mode="nearest")[0], b)


def test_pca_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="channel"):
        feature_pca(torch.randn(4, 2, 2), torch.randn(5, 2, 2))


def test_figure_is_a_png(tmp_path):
    path = save_comparison_figure(tmp_path / "f.png", torch.rand(3, 28, 42), torch.randn(8, 2, 3),
                                  torch.randn(8, 4, 6), (10, 5))
    assert path.read_bytes()[:4] == b"\x89PNG"


# --- the comparison figure: one PCA projection, colour bar, legend, layout, uniform input, fonts ---

import warnings

import numpy as np

from wrcup.viz import comparison_figure, drawable_text, figure_layout, font_families, pictures


def _structured(c=16, h=4, w=6, seed=0):
    """C×h×w features whose variance lies in the first three channels, on a common offset."""
    g = torch.Generator().manual_seed(seed)
    f = torch.zeros(c, h, w, dtype=torch.float64)
    f[:3] = torch.randn(3, h, w, generator=g, dtype=torch.float64)
    f[3] = 4.0
    return f


def _nearest2x(f):
    return F.interpolate(f[None], scale_factor=2, mode="nearest")[0]


def test_pca_offset_between_maps_does_not_take_over_the_colours():
    # The upsampler shifts every feature a little in a direction the low-res map does not vary along (the grey
    # image that came out green in one panel and pink in the other): a basis fitted on both maps together turns
    # that shift into the first colour. Fitted on the low-res map, equal colours remain equal.
    low = _structured()
    high = _nearest2x(low)
    high[7] += 5.0
    a, b = feature_pca(low, high)
    torch.testing.assert_close(_nearest2x(a), b)


def test_pca_projection_and_colour_range_come_from_the_low_res_map_alone():
    low = _structured(h=6, w=6)
    high = _nearest2x(low)
    high[:, 0, :] = 40.0  # an upsampler artefact along the top border, far outside the low-res features
    torch.testing.assert_close(feature_pca(low, high)[0], feature_pca(low)[0])


def test_pca_of_a_uniform_map_is_mid_grey_and_nearly_uniform_maps_stay_muted():
    const = torch.full((8, 3, 5), 0.7)
    for colours in feature_pca(const, _nearest2x(const)):
        torch.testing.assert_close(colours, torch.full_like(colours, 0.5))
    # features that differ by 1 % of their norm (a grey photo's position embedding) are not stretched to full colour
    near = const + 0.01 * 0.7 * torch.randn(8, 3, 5, generator=torch.Generator().manual_seed(1))
    lo_c, hi_c = feature_pca(near, _nearest2x(near))
    assert (lo_c - 0.5).abs().max() < 0.05 and (hi_c - 0.5).abs().max() < 0.05


def test_pca_pads_missing_components_with_grey():
    two = torch.randn(2, 3, 3)
    (colours,) = feature_pca(two)
    assert colours.shape == (3, 3, 3)
    torch.testing.assert_close(colours[2], torch.full((3, 3), 0.5))


def _figure(image_hw=(28, 42), point=(10.0, 5.0), seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    H, W = image_hw
    low = torch.randn(8, max(H // 14, 1), max(W // 14, 1), generator=g)
    high = _nearest2x(low) + 0.1 * torch.randn(8, 2 * low.shape[1], 2 * low.shape[2], generator=g)
    return comparison_figure(torch.rand(3, H, W, generator=g), low, high, point, **kw), low, high


def _panels(fig):
    """The picture panels (photo, PCA, similarity maps) in drawing order: axes holding an image and a title."""
    return [ax for ax in fig.axes if ax.get_images() and ax.get_title()]


def test_figure_pca_panels_give_the_same_vector_the_same_colour():
    low = _structured().float()
    fig = comparison_figure(torch.rand(3, 28, 42), low, _nearest2x(low), (10.0, 5.0))
    pca_lo, pca_hi = (np.asarray(ax.get_images()[0].get_array()) for ax in _panels(fig)[1:3])
    np.testing.assert_array_equal(pca_lo.repeat(2, 0).repeat(2, 1), pca_hi)


def test_figure_similarity_maps_share_a_labelled_colour_bar_covering_their_values():
    fig, low, high = _figure()
    sims = [ax.get_images()[0] for ax in _panels(fig)[3:]]
    assert len(sims) == 2
    bar = sims[0].colorbar
    assert bar is not None and sims[1].norm.vmin == sims[0].norm.vmin and sims[1].norm.vmax == 1.0
    assert "cosine similarity" in (bar.ax.get_ylabel() + bar.ax.get_xlabel())
    lowest = min(float(np.min(s.get_array())) for s in sims)
    assert bar.vmin <= lowest and bar.vmin <= 0.0 and bar.vmax == 1.0


def test_figure_marks_the_query_point_and_names_it_in_a_legend():
    fig, _, _ = _figure(point=(10.0, 5.5))
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    texts = [t.get_text() for lg in legends for t in lg.get_texts()]
    assert texts == ["query (10, 5.5)"]
    for ax in _panels(fig):
        marks = [line.get_xydata().tolist() for line in ax.get_lines()]
        assert marks == [[[10.0, 5.5]]], ax.get_title()
    fig, _, _ = _figure(point=(10.0, 5.5), point_label="query (1000, 550) in the original")
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert [t.get_text() for lg in legends for t in lg.get_texts()] == ["query (1000, 550) in the original"]


@pytest.mark.parametrize("image_hw", [(30, 400), (28, 42), (28, 28), (200, 30)])
def test_figure_layout_follows_the_image_aspect_ratio(image_hw):
    # a 4000×300 photo drew five unreadable strips in one row: each panel must take a fair share of the figure
    H, W = image_hw
    fig, _, _ = _figure(image_hw=image_hw, point=(W / 2, H / 2))
    fig.draw_without_rendering()
    width, height = fig.get_size_inches()
    assert width <= 16 and height <= 12
    fig_area = fig.bbox.width * fig.bbox.height
    panels = _panels(fig)
    assert len(panels) == 5
    for ax in panels:
        box = ax.get_window_extent()
        assert box.width * box.height >= 0.05 * fig_area, (image_hw, ax.get_title())
        assert box.width / box.height == pytest.approx(W / H, rel=0.05)
    lefts = {round(ax.get_window_extent().x0) for ax in panels}
    bottoms = {round(ax.get_window_extent().y0) for ax in panels}
    if W / H > 8:  # a panorama: panels stacked in one column
        assert len(lefts) == 1
    if W / H < 0.3:  # a tall strip: panels side by side in one row
        assert len(bottoms) == 1


def test_figure_layout_grids():
    assert figure_layout(5, 4000 / 300)[:2] == (5, 1)
    assert figure_layout(5, 300 / 2000)[:2] == (1, 5)
    assert figure_layout(5, 1.5)[:2] == (2, 3)
    assert figure_layout(3, 4000 / 300)[:2] == (3, 1)
    for n in (3, 5):
        for aspect in (1e-3, 0.15, 1.0, 1.5, 13.3, 1e3):
            w, h = figure_layout(n, aspect)[3]
            assert 0 < w <= 16 and 0 < h <= 12
    with pytest.raises(ValueError, match="aspect"):
        figure_layout(5, 0.0)
    with pytest.raises(ValueError, match="n_panels"):
        figure_layout(4, 1.0)


def _ring_luminance(png, box, height, inset=2, width=4):
    """Luminance of the pixels in a ring ``inset``…``inset+width`` px inside a display-space box of the PNG."""
    x0, x1 = int(np.ceil(box.x0)) + inset, int(np.floor(box.x1)) - inset
    y0, y1 = height - int(np.floor(box.y1)) + inset, height - int(np.ceil(box.y0)) - inset
    crop = png[y0:y1, x0:x1, :3]
    mask = np.zeros(crop.shape[:2], bool)
    mask[:width], mask[-width:], mask[:, :width], mask[:, -width:] = True, True, True, True
    return (crop @ np.array([0.2126, 0.7152, 0.0722]))[mask]


@pytest.mark.parametrize("case", ["constant", "near-uniform"])
def test_uniform_input_draws_no_dark_frame(tmp_path, case):
    import matplotlib.image

    image = torch.full((3, 56, 84), 0.5)
    low = torch.ones(8, 4, 6)
    high = torch.ones(8, 8, 12)
    if case == "near-uniform":  # what an upsampler does at the border of a uniform image: cosine 0.95 there
        low = low + 0.003 * torch.randn(8, 4, 6, generator=torch.Generator().manual_seed(0))
        high[0, [0, -1], :] += 0.9
        high[0, :, [0, -1]] += 0.9
    path = save_comparison_figure(tmp_path / "u.png", image, low, high, (42.0, 28.0))
    png = matplotlib.image.imread(path)
    fig = comparison_figure(image, low, high, (42.0, 28.0))  # the same figure, for the panels' positions
    fig.draw_without_rendering()
    assert abs(png.shape[0] - fig.bbox.height) < 1 and abs(png.shape[1] - fig.bbox.width) < 1
    for ax in _panels(fig):
        ring = _ring_luminance(png, ax.get_window_extent(), png.shape[0])
        assert ring.min() > 0.3, (case, ax.get_title(), ring.min())


def test_drawable_text_escapes_only_what_no_font_draws():
    # 'ᴥ' (U+1D25) is in DejaVu Serif, which matplotlib ships, but not in DejaVu Sans, its default font
    assert drawable_text("ᴥ写.jpg — фото", ["DejaVu Sans"]) == "\\u1d25\\u5199.jpg — фото"
    assert drawable_text("ᴥ.jpg", ["DejaVu Sans", "DejaVu Serif"]) == "ᴥ.jpg"
    assert drawable_text("a\nb", ["DejaVu Sans"]) == "a\\nb"
    # right-to-left names keep the title's left-to-right order: a left-to-right mark leads
    assert drawable_text("صورة.jpg — m", ["DejaVu Sans"]) == "\u200eصورة.jpg — m"


def test_non_latin_file_names_draw_without_missing_glyph_warnings(tmp_path):
    from matplotlib import font_manager

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig, _, _ = _figure(point=None, title="写真 фото صورة.jpg — m")
        fig.draw_without_rendering()
    assert [str(w.message) for w in caught if "missing from font" in str(w.message)] == []
    # the CJK name is drawn where a fallback font has it (e.g. Debian's fonts-noto-cjk), escaped where none has
    has_cjk = any(0x5199 in font_manager.get_font(font_manager.findfont(font_manager.FontProperties(family=f)))
                  .get_charmap() for f in font_families()[1:])
    cjk = "写真" if has_cjk else "\\u5199\\u771f"
    assert fig.get_suptitle() == f"\u200e{cjk} фото صورة.jpg — m"


def test_fallback_fonts_are_used_when_installed(monkeypatch):
    # with no fallback installed, only the default font; with one that is (DejaVu Serif ships with matplotlib)
    monkeypatch.setattr(pictures, "FALLBACK_FONT_FAMILIES", ("No Such Font Family",))
    assert font_families() == ["DejaVu Sans"]
    monkeypatch.setattr(pictures, "FALLBACK_FONT_FAMILIES", ("No Such Font Family", "DejaVu Serif"))
    assert font_families() == ["DejaVu Sans", "DejaVu Serif"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig, _, _ = _figure(point=None, title="ᴥ.jpg")
        fig.draw_without_rendering()
    assert fig.get_suptitle() == "ᴥ.jpg"
    assert [str(w.message) for w in caught if "missing from font" in str(w.message)] == []


def test_title_is_not_parsed_as_mathtext():
    fig, _, _ = _figure(title="cost$x^2$.jpg")
    assert fig._suptitle.get_parse_math() is False


def test_point_none_leaves_out_the_similarity_maps(tmp_path):
    fig, _, _ = _figure(point=None)
    panels = _panels(fig)
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["image", "low-res PCA", "upsampled PCA"]
    assert not fig.legends and all(ax.get_legend() is None for ax in fig.axes)
    assert all(not ax.get_lines() for ax in panels)
    assert len(fig.axes) == 3  # no colour bar
    path = save_comparison_figure(tmp_path / "n.png", torch.rand(3, 28, 42), torch.randn(8, 2, 3),
                                  torch.randn(8, 4, 6), None, title="x")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_panel_sizes_read_width_by_height_like_the_command_line():
    """``wrcup upsample`` says sizes as W×H (progress line, warnings); the panels say theirs the same way."""
    fig, low, high = _figure(image_hw=(28, 42))
    titles = [ax.get_title().splitlines() for ax in _panels(fig)[:3]]
    assert titles == [["image", "42×28"], ["low-res PCA", "3×2"], ["upsampled PCA", "6×4"]]
