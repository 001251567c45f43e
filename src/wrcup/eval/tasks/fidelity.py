"""Feature fidelity: features at one size against the backbone's own features at twice (4× methods: four times)
that size."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch.nn.functional as F
from tqdm.auto import tqdm

from ...data.images import list_images, load_image
from ..extract import FeatureExtractor, file_key, resize_to_grid
from ..fidelity import feature_fidelity
from . import register_task
from ._common import TaskOptions, option


def image_list(items: list, every: int = 1) -> list[Path]:
    """Image files of ``items`` (files, or folders searched recursively), sorted, every ``every``-th kept."""
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths.extend(list_images(p))
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"images: no such file or folder: {item}")
    return sorted(paths)[::max(1, every)]


@dataclass
class FidelityOptions(TaskOptions):
    image_paths: list = option(help="image files or folders", flag="images", positional=True)
    size: int = option(224, help="input shorter side (target: twice this; 4× methods: four times)")
    every: int = option(1, help="use every k-th image (sorted)")

    def resolved(self) -> "FidelityOptions":
        return replace(self, image_paths=image_list(self.image_paths, self.every), every=1)


@register_task("fidelity", FidelityOptions, help="cosine / NMSE against the backbone's features at twice the "
               "resolution (4× methods: four times)", metric="cosine", higher_is_better=True, label="fidelity cosine")
def run(extractor: FeatureExtractor, options: FidelityOptions, progress: bool = True) -> dict:
    """Feature fidelity: features of an image at ``size`` (shorter side) against the backbone's own features of
    the same image at s×``size``, s = max(2, the method's scale): the target grid is s times the input grid,
    the grid a 2× or 4× method predicts.

    ``none`` is compared after nearest (replicating) upsampling to the 2× target grid, the other methods
    directly. Returns mean cosine and normalised MSE over images (each image weighs the same) and
    ``target_size`` = s×``size``; numbers of 2× and 4× methods are against different targets (the 4× one is
    the harder), so compare methods of one scale. When the images lie in more than one folder (DAVIS: one per
    sequence), ``per_folder`` holds the same means for each folder, named by its path below the folders' common
    parent, so that a change of the overall mean can be traced to the sequences that cause it.
    """
    size = options.size
    factor = max(2, extractor.scale)  # `none` (1×) keeps the 2× target it has always been scored against
    patch = extractor.backbone.patch_size
    per_image = []
    for path in tqdm(options.image_paths, desc=f"fidelity/{extractor.method}", disable=not progress, unit="img"):
        image = load_image(path)
        low_in = resize_to_grid(image, size, patch)
        # exactly `factor` times the input grid (rounding each size separately could give 57 vs 2×28 cells)
        high_in = F.interpolate(image[None], size=tuple(factor * d for d in low_in.shape[-2:]), mode="bilinear",
                                antialias=True, align_corners=False)[0].clamp(0, 1)
        key = file_key(path)
        pred = extractor(low_in[None], keys=[key])
        target = extractor.low_res(high_in[None], keys=[key])
        if extractor.method == "none":
            pred = F.interpolate(pred, size=target.shape[-2:], mode="nearest")
        per_image.append({k: float(v) for k, v in feature_fidelity(pred.float(), target.float()).items()})
    result = {"num_images": len(per_image), "input_size": size, "target_size": factor * size, **_means(per_image)}
    folders = [Path(p).parent for p in options.image_paths]
    if len(set(folders)) > 1:
        common = Path(os.path.commonpath([str(f) for f in folders]))
        groups: dict[str, list[dict]] = {}
        for folder, row in zip(folders, per_image):
            groups.setdefault(folder.relative_to(common).as_posix(), []).append(row)
        result["per_folder"] = {name: {"num_images": len(rows), **_means(rows)} for name, rows in groups.items()}
    return result


def _means(rows: list[dict]) -> dict:
    """Mean of each statistic over ``rows`` (one dict per image); empty for no rows."""
    keys = rows[0].keys() if rows else ()
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}
