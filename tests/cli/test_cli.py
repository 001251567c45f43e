"""CLI smoke tests on real photos: the main job, its error handling, info, train."""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from wrcup.cli.main import main
from wrcup.train.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, real_photos, embedded_backbone):
    """A 2-step checkpoint of the reference network on real photos (stands in for a trained one)."""
    folder = tmp_path_factory.mktemp("photos")
    for p in real_photos[:2]:
        shutil.copy(p, folder / p.name)
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(data=[str(folder)], out=str(out), steps=2, batch_size=2, high_res=112, crops=1,
                      progress=False, checkpoint_every=0, residual=True)
    train(cfg, backbone=embedded_backbone)
    return out / "wrc.safetensors"


def test_upsample_writes_features_and_figures(tmp_path, real_photos, tiny_checkpoint, capsys):
    images = [str(p) for p in real_photos[:2]]
    code = main(["upsample", *images, "--out", str(tmp_path), "--model", str(tiny_checkpoint), "--size", "112",
                 "--point", "10,20"])
    assert code == 0
    for p in real_photos[:2]:
        feats = load_file(str(tmp_path / f"{p.stem}.safetensors"))
        low, high = feats["low_res"], feats["features"]
        assert low.shape[0] == high.shape[0] == 384
        assert high.shape[1:] == (2 * low.shape[1], 2 * low.shape[2])
        assert torch.isfinite(high).all()
        png = (tmp_path / f"{p.stem}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "wrote 2 of 2" in capsys.readouterr().out


def test_upsample_output_norm_bilinear_gives_the_bilinear_lengths(tmp_path, real_photos, tiny_checkpoint):
    photo = real_photos[0]
    for norm in ("learned", "bilinear"):
        assert main(["upsample", str(photo), "--out", str(tmp_path / norm), "--model", str(tiny_checkpoint),
                     "--size", "112", "--no-figure", "--output-norm", norm]) == 0
    plain, normed = (load_file(str(tmp_path / n / f"{photo.stem}.safetensors")) for n in ("learned", "bilinear"))
    bilinear = torch.nn.functional.interpolate(normed["low_res"][None], scale_factor=2, mode="bilinear")[0]
    torch.testing.assert_close(normed["features"].norm(dim=0), bilinear.norm(dim=0), rtol=1e-4, atol=1e-4)
    cos = torch.nn.functional.cosine_similarity(plain["features"], normed["features"], dim=0)
    assert float(cos.min()) > 1 - 1e-4
    assert not torch.allclose(plain["features"].norm(dim=0), normed["features"].norm(dim=0), rtol=1e-2)


def test_upsample_scale_and_to_image(tmp_path, real_photos, tiny_checkpoint, capsys):
    from wrcup.data.images import load_image
    from wrcup.data.prep import prepare_images

    import numpy as np

    import wrcup
    from wrcup.models.tiling import learned_passes_to_guidance, upsample_bounded

    photo = real_photos[0]
    pixels = load_image(photo)
    # the plain last step here (upsample_bounded's); the guided default: tests/cli/test_upsample.py
    for flags, name in ((["--scale", "4"], "x4"), (["--to-image", "--final-step", "bilinear"], "image")):
        assert main(["upsample", str(photo), "--out", str(tmp_path / name), "--model", str(tiny_checkpoint),
                     "--size", "100", *flags]) == 0
    x4 = load_file(str(tmp_path / "x4" / f"{photo.stem}.safetensors"))
    assert x4["features"].shape[1:] == (4 * x4["low_res"].shape[1], 4 * x4["low_res"].shape[2])
    # --to-image: the photo's own size (under the cap), float16 dim×H×W in a .npy, and a picture
    image = np.load(tmp_path / "image" / f"{photo.stem}.npy")
    assert image.dtype == np.float16 and image.shape[1:] == tuple(pixels.shape[-2:])
    assert (tmp_path / "image" / f"{photo.stem}.png").is_file()
    assert not (tmp_path / "image" / f"{photo.stem}.safetensors").exists()
    model = wrcup.load(str(tiny_checkpoint))
    x = prepare_images(pixels[None], model.backbone.patch_size, 100)  # one resize, as the CLI does
    with torch.inference_mode():
        low = model.backbone(x)
        expected = upsample_bounded(model.upsampler, model.backbone.normalise(x), low, tuple(pixels.shape[-2:]),
                                    learned_passes=learned_passes_to_guidance(low.shape[-2:], x.shape[-2:]))[0]
    torch.testing.assert_close(torch.from_numpy(image).float(), expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))
    for budget in ("lots", "1G"):  # unreadable; no more than the part kept for the rest of the process
        assert main(["upsample", str(photo), "--out", str(tmp_path / "m"), "--model", str(tiny_checkpoint),
                     "--max-memory", budget]) == 2
        assert "--max-memory" in capsys.readouterr().err
    for flags in (["--scale", "3"], ["--scale", "4", "--to-image"]):
        with pytest.raises(SystemExit) as exc:
            main(["upsample", str(photo), "--out", str(tmp_path), *flags])
        assert exc.value.code == 2


def test_upsample_budget_too_small_for_a_pass_fails_that_image_in_one_line(tmp_path, real_photos, tiny_checkpoint,
                                                                          capsys):
    from wrcup.models.tiling import RESERVED_BYTES

    budget = str(RESERVED_BYTES + 1024)  # 1 KiB past the part kept for the process: no pass fits
    photos = [str(p) for p in real_photos[:2]]
    assert main(["upsample", *photos, "--out", str(tmp_path), "--model", str(tiny_checkpoint), "--no-figure",
                 "--max-memory", budget]) == 1
    err = capsys.readouterr().err
    assert err.count("too small for a pass") == 2 and "needs at least" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_upsample_rejects_missing_and_unreadable_files_but_finishes_the_rest(tmp_path, real_photos, tiny_checkpoint, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    good = real_photos[0]
    code = main(["upsample", str(tmp_path / "missing.png"), str(broken), str(good), "--out", str(tmp_path / "o"),
                 "--model", str(tiny_checkpoint), "--size", "112", "--no-figure"])
    captured = capsys.readouterr()
    assert code == 1
    assert "missing.png" in captured.err and "broken.jpg" in captured.err
    # the inputs lie in two folders, so the output mirrors the good image's folder below their common parent
    assert len(list((tmp_path / "o").rglob(f"{good.stem}.safetensors"))) == 1
    assert "wrote 1 of 3" in captured.out


def test_upsample_point_outside_image_is_reported(tmp_path, real_photos, tiny_checkpoint, capsys):
    # the point only serves the similarity maps: the image is still written, without them, and a warning says so
    code = main(["upsample", str(real_photos[0]), "--out", str(tmp_path), "--model", str(tiny_checkpoint),
                 "--size", "112", "--point", "100000,5"])
    assert code == 0
    assert "outside the image" in capsys.readouterr().err
    assert (tmp_path / f"{real_photos[0].stem}.png").is_file()


def test_upsample_caps_the_long_side_of_an_elongated_image(tmp_path, real_photos, tiny_checkpoint, capsys):
    # a 1:50 strip at --size 112 would feed the backbone 5600×112 pixels; the default cap (4 × --size) keeps its
    # long side at 448, the short side shrinks with it (20·448/1000 = 9 pixels: raised to the upsampler's 2×2
    # grid floor), and a warning says so
    from PIL import Image

    strip = tmp_path / "strip.png"
    Image.open(real_photos[0]).convert("RGB").resize((1000, 20)).save(strip)
    code = main(["upsample", str(strip), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint),
                 "--size", "112", "--no-figure"])
    assert code == 0
    assert "--max-input-side 448" in capsys.readouterr().err
    feats = load_file(str(tmp_path / "o" / "strip.safetensors"))
    assert feats["low_res"].shape[1:] == (2, 32)  # 448 → 32 patches
    assert main(["upsample", str(strip), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint),
                 "--size", "112", "--max-input-side", "56"]) == 2
    assert "--max-input-side must be at least --size (112); got 56" in capsys.readouterr().err


def test_missing_checkpoint_is_one_clear_line(tmp_path, real_photos, capsys):
    code = main(["upsample", str(real_photos[0]), "--out", str(tmp_path), "--model", str(tmp_path / "nope.safetensors")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.safetensors" in err and "Traceback" not in err


def test_bad_point_syntax_exits_with_usage_error(tmp_path, real_photos):
    with pytest.raises(SystemExit) as exc:
        main(["upsample", str(real_photos[0]), "--out", str(tmp_path), "--point", "middle"])
    assert exc.value.code == 2


def test_info_lists_registries(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "wrc-reference" in out and "dinov2-s14-imgfocus" in out
    assert "checkpoints: wrc-dinov2-s14-imgfocus, wrc-dinov2-s14-imgfocus-v2 (default)\n" in out
    assert "\ncpu:         bfloat16 units: " in out


@pytest.mark.parametrize("units, words", [("AMX", "run faster here"), ("AVX512-BF16", "not measured"),
                                          (None, "Keep float32")])
def test_info_says_whether_bfloat16_pays_on_this_cpu(capsys, monkeypatch, units, words):
    from wrcup.models import fuse

    monkeypatch.setattr(fuse, "cpu_bfloat16_units", lambda: units)
    assert main(["info"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("cpu:") and words in line


def test_train_rejects_unknown_loss_names(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--losses", "local,perceptual"]) == 2
    assert "perceptual" in capsys.readouterr().err


def test_truncated_checkpoint_is_one_clear_line(tmp_path, real_photos, tiny_checkpoint, capsys):
    """A bad copy of a checkpoint (cut short) is named in one line, for wrcup.load and the CLI alike."""
    import wrcup

    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(tiny_checkpoint.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        wrcup.load(cut)
    code = main(["upsample", str(real_photos[0]), "--out", str(tmp_path / "o"), "--model", str(cut)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and str(cut) in err
    assert err.count("\n") == 1 and "Traceback" not in err
