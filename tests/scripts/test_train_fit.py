"""scripts/train_fit.py on real photos: its cosines against a direct transcription of the training views."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from script_helpers import load_script

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "src" / "wrcup" / "checkpoints" / "wrc-dinov2-s14-imgfocus.safetensors"


def _script():
    return load_script("train_fit")


def _direct_cosines(bundle, photo: Path, high_res: int) -> dict:
    """The full-view pair written out: centre square of the photo at ``high_res``, its half-size antialiased view,
    the backbone on both; the cosines of the bilinear and the learned 2× outputs to the high-res features."""
    image = torch.from_numpy(np.array(Image.open(photo).convert("RGB"))).permute(2, 0, 1).float().div(255)[None]
    h, w = image.shape[-2:]
    scale = high_res / min(h, w)
    size = (max(high_res, round(h * scale)), max(high_res, round(w * scale)))
    resized = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = round((size[0] - high_res) / 2), round((size[1] - high_res) / 2)
    high = resized[..., top:top + high_res, left:left + high_res].clamp(0, 1)
    low = F.interpolate(high, size=(high_res // 2,) * 2, mode="bilinear", antialias=True,
                        align_corners=False).clamp(0, 1)
    with torch.inference_mode():
        z_low, z_high = bundle.backbone(low), bundle.backbone(high)
        preds = {"bilinear": F.interpolate(z_low, scale_factor=2, mode="bilinear", align_corners=False),
                 "learned": bundle.upsampler(bundle.backbone.normalise(low), z_low)}
    return {model: F.cosine_similarity(pred, z_high, dim=1).mean().item() for model, pred in preds.items()}


def test_train_fit_matches_the_training_views_and_resumes(tmp_path, real_photos, capsys):
    import wrcup
    from wrcup.train.config import TrainConfig

    tf = _script()
    train, heldout = tmp_path / "train", tmp_path / "heldout"
    for folder, photos in ((train, real_photos[:3]), (heldout, real_photos[3:4])):
        folder.mkdir()
        for photo in photos:
            shutil.copy(photo, folder / photo.name)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(SHIPPED, run / "step-100.safetensors")
    shutil.copy(SHIPPED, run / "step-100.ema.safetensors")
    config = dataclasses.asdict(TrainConfig(data=[str(train)], out=str(run), high_res=[56, 112], crops=1, crop_align=28,
                                            loss_weights={"local": 1.0, "full": 0.0}))
    (run / "last.json").write_text(json.dumps({"config": config}))
    out = tmp_path / "fit.json"
    argv = [str(run), "--set", f"train={train}:2", "--set", f"heldout={heldout}", "--cache", str(tmp_path / "cache"),
            "--out", str(out), "--data-root", str(tmp_path)]
    assert tf.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["sets"]["train"] == {"folder": "$DATA/train", "every": 2, "num_images": 2}
    cells = {(c["model"], c["set"], c["scale"]): c for c in result["cells"]}
    assert len(cells) == len(result["cells"]) == 3 * 2 * 2  # bilinear, snapshot, EMA × two sets × two scales
    assert cells[("learned (EMA)", "train", "28->56")]["weights"] == "ema"

    bundle = wrcup.load(SHIPPED, device="cpu")
    trained = sorted(train.iterdir())[::2]
    for high_res in (56, 112):
        scale = f"{high_res // 2}->{high_res}"
        direct = [_direct_cosines(bundle, p, high_res) for p in trained]
        for model in ("bilinear", "learned"):
            expected = sum(d[model] for d in direct) / len(direct)
            # the cache holds the low view as uint8 and the features as float16
            assert cells[(model, "train", scale)]["cosine"] == pytest.approx(expected, abs=3e-3)
        assert cells[("learned", "heldout", scale)]["cosine"] == pytest.approx(
            _direct_cosines(bundle, heldout / real_photos[3].name, high_res)["learned"], abs=3e-3)
        assert cells[("learned", "train", scale)]["cosine"] == cells[("learned (EMA)", "train", scale)]["cosine"]
        assert cells[("learned", "train", scale)]["cosine"] != cells[("bilinear", "train", scale)]["cosine"]

    # a new snapshot and an extra model: only their cells are computed
    shutil.copy(SHIPPED, run / "step-200.safetensors")
    capsys.readouterr()
    assert tf.main(argv + ["--models", str(SHIPPED)]) == 0
    printed = capsys.readouterr().out
    assert "step    200" in printed and "step    100" not in printed and "bilinear" not in printed
    again = json.loads(out.read_text())["cells"]
    assert again[:12] == result["cells"] and len(again) == 12 + 2 * 2 * 2


def test_train_fit_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(SystemExit, match="last.json"):
        _script().main([str(tmp_path), "--set", f"x={tmp_path}", "--cache", str(tmp_path / "c"),
                        "--out", str(tmp_path / "o.json")])
