"""``wrcup upsample`` under real-world input: name collisions, overwrites, folders, output faults, bad flags,
odd images, progress and the metadata it writes. Uses the shipped model at small --size (fast)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from wrcup.cli.main import main
from wrcup.models.names import DEFAULT_CHECKPOINT

SMALL = ["--size", "28"]


def _photo(path, real_photos, index=0, size=None):
    """Copy a real photo to ``path`` (re-encoded at ``size`` (w, h) when given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if size is None:
        shutil.copy(real_photos[index], path)
    else:
        Image.open(real_photos[index]).convert("RGB").resize(size).save(path)
    return path


# ------------------------------------------------------------------------------------------ output names
def test_same_file_names_in_two_folders_get_two_outputs(tmp_path, real_photos, fast_load, capsys):
    a = _photo(tmp_path / "in" / "a" / "00000.jpg", real_photos, 0)
    b = _photo(tmp_path / "in" / "b" / "00000.jpg", real_photos, 1)
    out = tmp_path / "out"
    assert main(["upsample", str(a), str(b), "--out", str(out), *SMALL]) == 0
    fa, fb = (load_file(str(out / d / "00000.safetensors"))["features"] for d in ("a", "b"))
    assert not torch.equal(fa, fb)  # two images, two files: nothing overwritten
    assert (out / "a" / "00000.png").is_file() and (out / "b" / "00000.png").is_file()
    assert "wrote 2 of 2" in capsys.readouterr().out


def test_same_stem_in_one_folder_keeps_the_suffixes(tmp_path, real_photos, fast_load):
    jpg = _photo(tmp_path / "x.jpg", real_photos, 0)
    png = tmp_path / "x.png"
    Image.open(real_photos[1]).save(png)
    out = tmp_path / "out"
    assert main(["upsample", str(jpg), str(png), "--out", str(out), "--no-figure", *SMALL]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x.jpg.safetensors", "x.png.safetensors"]


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, real_photos, fast_load, capsys):
    first = _photo(tmp_path / "first.jpg", real_photos, 0)
    second = _photo(tmp_path / "second.jpg", real_photos, 1)
    out = tmp_path / "out"
    assert main(["upsample", str(first), "--out", str(out), "--no-figure", *SMALL]) == 0
    target = out / "first.safetensors"
    target.write_bytes(b"kept")
    capsys.readouterr()
    assert main(["upsample", str(first), str(second), "--out", str(out), "--no-figure", *SMALL]) == 1
    captured = capsys.readouterr()
    refusal = [line for line in captured.err.splitlines() if "first.jpg" in line]
    assert len(refusal) == 1 and "exists" in refusal[0] and "--overwrite" in refusal[0]
    assert target.read_bytes() == b"kept" and (out / "second.safetensors").is_file()
    assert "wrote 1 of 2" in captured.out
    assert main(["upsample", str(first), "--out", str(out), "--no-figure", "--overwrite", *SMALL]) == 0
    assert load_file(str(target))["features"].shape[0] == 384


def test_folders_are_expanded_and_mirrored(tmp_path, real_photos, fast_load, capsys):
    root = tmp_path / "DAVIS"
    _photo(root / "bear" / "00000.jpg", real_photos, 0)
    _photo(root / "bear" / "00001.jpg", real_photos, 1)
    _photo(root / "car" / "00000.jpg", real_photos, 2)
    (root / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    again = str(root / "bear" / ".." / "bear" / "00000.jpg")  # one image named twice is processed once
    code = main(["upsample", str(root), again, str(tmp_path / "empty"), "--out", str(out), "--no-figure", *SMALL])
    captured = capsys.readouterr()
    assert code == 1  # the empty folder is reported, the three images are written
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.safetensors")) == [
        "bear/00000.safetensors", "bear/00001.safetensors", "car/00000.safetensors"]
    assert "empty" in captured.err and "no image" in captured.err and "no such file" not in captured.err
    assert "wrote 3 of 4" in captured.out


# ------------------------------------------------------------------------------------------ output faults
def test_out_that_is_a_file_or_lies_under_a_file_is_refused_before_loading(tmp_path, real_photos, no_model_load,
                                                                          capsys):
    photo = _photo(tmp_path / "p.jpg", real_photos)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    for out in (blocker, blocker / "sub"):
        assert main(["upsample", str(photo), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --out") and str(out) in err[0]
        assert "Traceback" not in err[0]


def test_read_only_out_is_refused_before_loading(tmp_path, real_photos, tmpfs, no_model_load, capsys):
    photo = _photo(tmp_path / "p.jpg", real_photos)
    ro = tmpfs("1m", read_only=True)
    for out in (ro, ro / "new-folder"):
        assert main(["upsample", str(photo), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --out") and "Read-only file system" in err[0]


def test_full_disk_fails_one_image_in_one_line_and_the_others_finish(tmp_path, real_photos, tmpfs, fast_load, capsys):
    # at --size 28 a 280×28 image needs ~0.3 MB of features, a 28×28 one ~0.03 MB: only the small one fits
    wide = _photo(tmp_path / "wide.png", real_photos, 0, size=(280, 28))
    small = _photo(tmp_path / "small.png", real_photos, 1, size=(28, 28))
    out = tmpfs("160k")
    code = main(["upsample", str(wide), str(small), "--out", str(out), "--no-figure", "--quiet", *SMALL,
                 "--max-input-side", "280"])
    captured = capsys.readouterr()
    assert code == 1
    failed = [line for line in captured.err.splitlines() if "wide.png" in line]
    assert len(failed) == 1 and "No space left on device" in failed[0]
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["small.safetensors"]  # no partial or temporary file left
    assert "wrote 1 of 2" in captured.out


def test_to_image_on_a_full_disk_fails_in_one_line_and_leaves_no_file(tmp_path, real_photos, tmpfs, fast_load,
                                                                       capsys):
    # 384 float16 channels of 100×150 need 11.5 MB; the writer thread's error reaches the image's one line
    photo = _photo(tmp_path / "p.png", real_photos, 0, size=(150, 100))
    out = tmpfs("4m")
    code = main(["upsample", str(photo), "--out", str(out), "--to-image", "--no-figure", "--quiet", *SMALL])
    captured = capsys.readouterr()
    assert code == 1
    assert [line for line in captured.err.splitlines() if "p.png" in line][0].endswith("No space left on device")
    assert "Traceback" not in captured.err and list(out.iterdir()) == []


def test_to_image_max_side_caps_the_long_side(tmp_path, real_photos, fast_load, capsys):
    photo = _photo(tmp_path / "p.png", real_photos, 0, size=(150, 100))
    out = tmp_path / "o"
    assert main(["upsample", str(photo), "--out", str(out), "--to-image", "--max-side", "60", "--no-figure",
                 *SMALL]) == 0
    assert np.load(out / "p.npy", mmap_mode="r").shape == (384, 40, 60)
    assert "features 60×40" in capsys.readouterr().err  # W×H, like every status line


def test_to_image_guided_final_step_is_guided_upsample_with_the_photo(tmp_path, real_photos, fast_load):
    """--final-step guided (the default) writes guided_upsample of the learned grid with the photo itself as the
    guide (so guide and features cover the same field); --final-step bilinear writes the plain growth."""
    import wrcup
    from wrcup.data.images import load_image
    from wrcup.data.prep import prepare_images
    from wrcup.models.tiling import learned_grid, learned_passes_to_guidance
    from wrcup.ops import guided_upsample

    photo = _photo(tmp_path / "p.png", real_photos, 0, size=(150, 100))
    for step in ("guided", "bilinear"):
        assert main(["upsample", str(photo), "--out", str(tmp_path / step), "--to-image", "--final-step", step,
                     "--no-figure", "--quiet", *SMALL]) == 0
    guided, bilinear = (np.load(tmp_path / step / "p.npy").astype(np.float64) for step in ("guided", "bilinear"))
    model = wrcup.load()
    image = load_image(photo)
    x = prepare_images(image[None], model.backbone.patch_size, 28, None, model.upsampler.min_grid)
    with torch.inference_mode():
        norm, low = model.encode(x)
        grid = learned_grid(model.upsampler, norm, low, (100, 150),
                            learned_passes=learned_passes_to_guidance(low.shape[-2:], x.shape[-2:]))
    expected = guided_upsample(grid.double(), image[None].double(), (100, 150))[0].numpy()
    ulp = np.spacing(np.abs(expected).astype(np.float16)).astype(np.float64)
    # float16 rounding, plus float32 arithmetic in 3×3 solves whose condition number is at most
    # (3/4 + eps) / eps ≈ 750 for colours in [0, 1] and eps = 1e-3: 750 · 2⁻²⁴ ≈ 5e-5 of the scale
    assert (np.abs(guided - expected) <= 0.5 * ulp + 1e-4 * np.abs(expected).max()).all()
    grown = torch.nn.functional.interpolate(grid.double(), size=(100, 150), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(bilinear, grown[0].numpy(), rtol=1e-3, atol=1e-3 * float(grown.abs().max()))
    assert np.abs(guided - bilinear).max() > 0.05 * np.abs(bilinear).max()


# ------------------------------------------------------------------------------------------ precision
@pytest.mark.parametrize("to_image", [False, True])
def test_bfloat16_precision_gives_the_float32_features_to_bfloat16_rounding(tmp_path, real_photos, fast_load,
                                                                            to_image):
    """--precision bfloat16 runs the model under bfloat16 autocast: the features differ from float32's (so the
    backbone and the convolutions did compute in bfloat16), by rounding only. Bound: bfloat16 keeps 8 significant
    bits, so each rounding moves a vector by a relative 2⁻⁹ at most and costs ≈ (2⁻⁹)²/2 ≈ 2e-6 of cosine;
    thousands of roundings through twelve blocks and the upsampler stay far below 1e-3."""
    photo = _photo(tmp_path / "p.png", real_photos, 0, size=(150, 100))
    extra = ["--to-image"] if to_image else []
    for precision in ("float32", "bfloat16"):
        assert main(["upsample", str(photo), "--out", str(tmp_path / precision), "--precision", precision,
                     "--no-figure", "--quiet", "--size", "56", *extra]) == 0
    if to_image:
        single, half = (torch.from_numpy(np.load(tmp_path / p / "p.npy").astype(np.float32))
                        for p in ("float32", "bfloat16"))
    else:
        single, half = (load_file(tmp_path / p / "p.safetensors")["features"] for p in ("float32", "bfloat16"))
    assert single.shape == half.shape and half.dtype == single.dtype
    cosine = torch.nn.functional.cosine_similarity(single.double(), half.double(), dim=0)
    assert not torch.equal(single, half)
    assert float(cosine.min()) >= 0.999 and float(cosine.mean()) >= 0.9999, (float(cosine.min()), float(cosine.mean()))


def test_bfloat16_precision_needs_a_cpu_or_cuda_device():
    from wrcup.cli.precision import check_precision

    warned = []
    with pytest.raises(ValueError, match="--precision bfloat16 runs on cpu or cuda, not on 'mps'"):
        check_precision("bfloat16", "mps", warned.append)
    check_precision("float32", "mps", warned.append)
    assert warned == []


def test_bfloat16_precision_on_a_cpu_without_bfloat16_units_says_it_will_be_slow(tmp_path, real_photos, fast_load,
                                                                                 monkeypatch, capsys):
    import wrcup.models.fuse as fuse

    monkeypatch.setattr(fuse, "cpu_bfloat16_units", lambda: None)
    photo = _photo(tmp_path / "p.png", real_photos, 0, size=(60, 40))
    assert main(["upsample", str(photo), "--out", str(tmp_path / "o"), "--precision", "bfloat16", "--no-figure",
                 *SMALL]) == 0
    assert "warning: --precision bfloat16 on a CPU without bfloat16 units" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ bad flags
@pytest.mark.parametrize("argv, words", [
    (["--device", "gpu"], ["--device", "'gpu'", "cpu", "cuda"]),
    (["--device", "cuda"], ["--device", "no CUDA GPU"]),
    (["--size", "10"], ["--size", "at least 28", "10"]),
    (["--to-image", "--max-side", "0"], ["--max-side", "0"]),
])
def test_bad_flags_are_one_line_naming_the_flag(tmp_path, real_photos, no_model_load, monkeypatch, capsys, argv, words):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    photo = _photo(tmp_path / "p.jpg", real_photos)
    assert main(["upsample", str(photo), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    for word in words:
        assert word in err[0]


def test_device_is_checked_the_same_way_by_train_and_eval(tmp_path, real_photos, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    photos = tmp_path / "photos"
    _photo(photos / "p.jpg", real_photos)
    for argv in (["train", "--data", str(photos), "--out", str(tmp_path / "run")],
                 ["eval", "fidelity", str(photos), "--model", "dinov2-s14-imgfocus", "--method", "bilinear"]):
        for device, expected in (("gpu", "'gpu'"), ("cuda", "no CUDA GPU")):
            assert main([*argv, "--device", device]) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: --device") and expected in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["photo", "truncated checkpoint", "empty file"])
def test_model_that_is_not_a_checkpoint_is_one_line(tmp_path, real_photos, no_model_load, capsys, kind):
    from wrcup.models.bundle import checkpoint_path

    photo = _photo(tmp_path / "p.jpg", real_photos)
    if kind == "photo":
        model = photo
    else:
        data = checkpoint_path("wrc-dinov2-s14-imgfocus").read_bytes()
        model = tmp_path / "bad.safetensors"
        model.write_bytes(data[: len(data) // 2] if kind == "truncated checkpoint" else b"")
    assert main(["upsample", str(photo), "--out", str(tmp_path / "o"), "--model", str(model)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --model") and model.name in err[0]


# ------------------------------------------------------------------------------------------ --point
def test_point_is_ignored_without_a_figure(tmp_path, real_photos, fast_load):
    photo = _photo(tmp_path / "p.jpg", real_photos)
    assert main(["upsample", str(photo), "--out", str(tmp_path / "o"), "--no-figure", "--point", "100000,5",
                 *SMALL]) == 0
    assert (tmp_path / "o" / "p.safetensors").is_file()


def test_point_outside_one_image_drops_only_its_similarity_panel(tmp_path, real_photos, fast_load, capsys):
    small = _photo(tmp_path / "small.png", real_photos, 0, size=(40, 30))
    large = _photo(tmp_path / "large.png", real_photos, 1, size=(120, 90))
    out = tmp_path / "o"
    assert main(["upsample", str(small), str(large), "--out", str(out), "--point", "60,50", *SMALL]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "small.png" in line and "--point" in line]
    assert len(warning) == 1 and "outside" in warning[0]
    for name in ("small", "large"):
        assert (out / f"{name}.safetensors").is_file()
    # the picture without the two similarity panels is narrower
    assert Image.open(out / "small.png").width < Image.open(out / "large.png").width
    assert "wrote 2 of 2" in captured.out


# ------------------------------------------------------------------------------------------ odd images
def test_sixteen_bit_png_gives_the_features_of_its_picture(tmp_path, real_photos, fast_load):
    grey8 = np.asarray(Image.open(real_photos[0]).convert("L").resize((56, 42)))
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # same picture, 16 bits
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    out = tmp_path / "o"
    assert main(["upsample", str(tmp_path / "g8.png"), str(tmp_path / "g16.png"), "--out", str(out),
                 "--no-figure", *SMALL]) == 0
    f8, f16 = (load_file(str(out / f"{n}.safetensors"))["features"] for n in ("g8", "g16"))
    torch.testing.assert_close(f16, f8, rtol=1e-4, atol=1e-4)


def test_extreme_aspect_ratio_and_single_pixel_images(tmp_path, real_photos, fast_load):
    wide = _photo(tmp_path / "wide.png", real_photos, 0, size=(4000, 300))
    dot = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (200, 30, 30)).save(dot)
    out = tmp_path / "o"
    assert main(["upsample", str(wide), str(dot), "--out", str(out), "--no-figure", *SMALL,
                 "--max-input-side", "400"]) == 0
    # 4000×300 at shorter side 28 → 28×373 → nearest multiple of 14: 28×378 → 2×27 tokens → 4×54 upsampled
    assert load_file(str(out / "wide.safetensors"))["features"].shape == (384, 4, 54)
    assert load_file(str(out / "dot.safetensors"))["features"].shape == (384, 4, 4)
    # the default cap, 4 × --size = 112: 112/4000 · 300 = 8.4 pixels, raised to the upsampler's 2-token floor
    assert main(["upsample", str(wide), "--out", str(out / "capped"), "--no-figure", *SMALL]) == 0
    assert load_file(str(out / "capped" / "wide.safetensors"))["features"].shape == (384, 4, 16)


def test_unreadable_files_are_one_line_each_and_the_rest_finish(tmp_path, real_photos, fast_load, capsys):
    good = _photo(tmp_path / "good.jpg", real_photos)
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.jpg").write_bytes(b"")
    out = tmp_path / "o"
    code = main(["upsample", str(tmp_path / "cut.jpg"), str(tmp_path / "empty.jpg"), str(good), "--out", str(out),
                 "--no-figure", "--quiet", *SMALL])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    for name in ("cut.jpg", "empty.jpg"):
        assert len([line for line in captured.err.splitlines() if name in line]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["good.safetensors"]


# ------------------------------------------------------------------------------------------ progress, metadata
def test_a_single_image_says_what_is_happening_unless_quiet(tmp_path, real_photos, fast_load, capsys):
    photo = _photo(tmp_path / "p.jpg", real_photos)
    assert main(["upsample", str(photo), "--out", str(tmp_path / "o"), "--no-figure", *SMALL]) == 0
    err = capsys.readouterr().err
    assert f"loading model {DEFAULT_CHECKPOINT} on" in err and "p.jpg" in err
    assert main(["upsample", str(photo), "--out", str(tmp_path / "q"), "--no-figure", "--quiet", *SMALL]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "wrote 1 of 1" in captured.out


def test_first_use_says_the_backbone_is_being_converted(tmp_path, real_photos, monkeypatch, capsys):
    import wrcup

    monkeypatch.setenv("WRCUP_CACHE", str(tmp_path / "fresh-cache"))
    monkeypatch.setattr(wrcup, "load", lambda *a, **k: (_ for _ in ()).throw(ValueError("stop here")))
    photo = _photo(tmp_path / "p.jpg", real_photos)
    assert main(["upsample", str(photo), "--out", str(tmp_path / "o")]) == 2
    assert "converting the embedded backbone" in capsys.readouterr().err


def test_metadata_names_the_model_without_quotes(tmp_path, real_photos, fast_load):
    photo = _photo(tmp_path / "p.jpg", real_photos)
    assert main(["upsample", str(photo), "--out", str(tmp_path / "o"), "--no-figure", *SMALL]) == 0
    with safe_open(str(tmp_path / "o" / "p.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["model"] == DEFAULT_CHECKPOINT and meta["image"] == str(photo)


# ------------------------------------------------------------------------------------------ interrupted runs
def test_an_interrupted_run_keeps_whole_images_and_skip_existing_finishes_it(tmp_path, real_photos, fast_load,
                                                                             monkeypatch, capsys):
    import wrcup.viz

    images = [str(_photo(tmp_path / f"{i}.jpg", real_photos, i)) for i in range(2)]
    out = tmp_path / "o"
    real_figure, calls = wrcup.viz.save_comparison_figure, []

    def interrupted_on_the_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C after the second image's features were written
        return real_figure(*args, **kwargs)

    monkeypatch.setattr(wrcup.viz, "save_comparison_figure", interrupted_on_the_second)
    assert main(["upsample", *images, "--out", str(out), *SMALL]) == 130
    assert "--skip-existing" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "0.safetensors"]  # the second image: nothing
    kept = (out / "0.safetensors").read_bytes()
    monkeypatch.setattr(wrcup.viz, "save_comparison_figure", real_figure)
    assert main(["upsample", *images, "--out", str(out), "--skip-existing", *SMALL]) == 0
    assert "wrote 2 of 2 image(s)" in capsys.readouterr().out and (out / "1.png").is_file()
    assert (out / "0.safetensors").read_bytes() == kept


def test_outputs_inside_an_input_folder_are_not_taken_as_inputs(tmp_path, real_photos, fast_load, capsys):
    photos = tmp_path / "photos"
    _photo(photos / "p.jpg", real_photos)
    for extra in ([], ["--overwrite"]):
        assert main(["upsample", str(photos), "--out", str(photos / "out"), *SMALL, *extra]) == 0
        assert "wrote 1 of 1" in capsys.readouterr().out
    assert sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*")) == [
        "out", "out/p.png", "out/p.safetensors", "p.jpg"]


def test_a_failed_picture_removes_the_images_features_too(tmp_path, real_photos, fast_load, monkeypatch, capsys):
    import errno

    import wrcup.viz

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wrcup.viz, "save_comparison_figure", disk_full)
    photo = _photo(tmp_path / "p.jpg", real_photos)
    out = tmp_path / "o"
    assert main(["upsample", str(photo), "--out", str(out), "--quiet", *SMALL]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "p.png" in err[0] and "No space left on device" in err[0]
    assert list(out.iterdir()) == []  # complete or absent: the features went with the picture


def test_an_image_is_resized_once_on_its_way_to_the_backbone(tmp_path, real_photos, fast_load, monkeypatch):
    """A 480×640 photo at --size 28: one antialiased bilinear resize straight to 28×42 (the shorter side 28, the
    longer 37.3 → the nearest multiple of 14), whose backbone features are the ones written. (Before: resized to
    28×37 first, then again to 28×42 by the backbone.)"""
    import wrcup
    from wrcup.data.images import load_image

    photo = _photo(tmp_path / "p.png", real_photos, size=(640, 480))
    real = torch.nn.functional.interpolate
    resized = []

    def interpolate(x, *args, **kwargs):
        if x.ndim == 4 and x.shape[1] == 3 and x.shape[-2:] == (480, 640):
            resized.append(kwargs.get("size", args[0] if args else None))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "interpolate", interpolate)
    assert main(["upsample", str(photo), "--out", str(tmp_path / "o"), "--no-figure", *SMALL]) == 0
    monkeypatch.setattr(torch.nn.functional, "interpolate", real)
    assert [tuple(s) for s in resized] == [(28, 42)]
    with safe_open(str(tmp_path / "o" / "p.safetensors"), framework="pt") as f:
        assert f.metadata()["input_size"] == "28x42"
    written = load_file(str(tmp_path / "o" / "p.safetensors"))["low_res"]
    once = real(load_image(photo)[None], size=(28, 42), mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(written, wrcup.load().backbone(once)[0].float())


def test_folders_expand_to_every_image_format_that_loads(tmp_path, real_photos, fast_load):
    folder = tmp_path / "in"
    for suffix, fmt in ((".jpg", "JPEG"), (".tif", "TIFF"), (".tiff", "TIFF"), (".gif", "GIF"), (".webp", "WEBP"),
                        (".bmp", "BMP")):
        folder.mkdir(exist_ok=True)
        Image.open(real_photos[0]).convert("RGB").resize((42, 28)).save(folder / f"a{suffix}", format=fmt)
    (folder / "notes.txt").write_text("not an image")
    assert main(["upsample", str(folder), "--out", str(tmp_path / "o"), "--no-figure", "--quiet", *SMALL]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(
        f"a{s}.safetensors" for s in (".jpg", ".tif", ".tiff", ".gif", ".webp", ".bmp"))


def test_sizes_in_status_lines_read_width_by_height(tmp_path, real_photos, fast_load, capsys):
    photo = _photo(tmp_path / "p.png", real_photos, size=(60, 30))  # W×H
    assert main(["upsample", str(photo), "--out", str(tmp_path / "o"), "--to-image", "--no-figure", *SMALL]) == 0
    err = capsys.readouterr().err
    assert "features 60×30" in err and "30×60" not in err


def test_the_to_image_picture_title_names_the_reduction_in_english():
    from wrcup.cli.to_image import _drawn

    assert [_drawn(k) for k in (1, 2, 3, 4, 11, 12, 21, 22)] == [
        "every pixel drawn", "every 2nd pixel drawn", "every 3rd pixel drawn", "every 4th pixel drawn",
        "every 11th pixel drawn", "every 12th pixel drawn", "every 21st pixel drawn", "every 22nd pixel drawn"]
