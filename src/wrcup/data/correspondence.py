"""Keypoint correspondence data: SPair-71k pairs, a real homography pair, and synthetic homography pairs.

Points are float32 K×2 in (x, y) pixel coordinates: x = column, y = row, pixel centres at integers.
Homographies are float64 3×3 matrices mapping source (x, y, 1) to target coordinates (up to scale).
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .._checks import check_positive_int
from .registry import register_dataset
from .images import DatasetLayoutError, ImageReadError, load_image

# ------------------------------------------------------------------------------------------------ SPair-71k
_SPAIR_LAYOUT = "<root>/PairAnnotation/<trn|val|test>/*.json, <root>/JPEGImages/<category>/<name>.jpg"


class SPairDataset(torch.utils.data.Dataset):
    """SPair-71k keypoint pairs.

    Layout::

        <root>/PairAnnotation/{trn,val,test}/<pair>:<category>.json
        <root>/JPEGImages/<category>/<name>.jpg

    Each JSON gives ``src_imname``, ``trg_imname``, ``category``, ``src_kps``/``trg_kps`` (lists of [x, y],
    matched by position) and ``src_bndbox``/``trg_bndbox`` ([x0, y0, x1, y1]). ``split`` accepts
    ``trn``/``val``/``test`` or ``train``. ``category`` restricts the pairs to one class.

    Items: ``{"source_image", "target_image" (float32 3×H×W, if ``load_images``), "source_points",
    "target_points" (float32 K×2), "source_box", "target_box" (float32 4), "pck_threshold": float
    (max side of the target box: PCK@α counts a point correct within α times this), "category", "name",
    "source_path", "target_path"}``.
    """

    name = "SPair-71k"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "test",
        category: str | None = None,
        load_images: bool = True,
        transform: Callable | None = None,
    ):
        self.root = Path(root)
        split = {"train": "trn"}.get(split, split)
        self.split, self.load_images, self.transform = split, load_images, transform
        pair_dir = self.root / "PairAnnotation" / split
        for folder in (pair_dir, self.root / "JPEGImages"):
            if not folder.is_dir():
                raise DatasetLayoutError(self.name, self.root, folder, _SPAIR_LAYOUT)
        files = sorted(pair_dir.glob("*.json"))
        if category is not None:
            files = [f for f in files if f.stem.split(":")[-1] == category]
        if not files:
            raise DatasetLayoutError(self.name, self.root, pair_dir / "*.json", _SPAIR_LAYOUT)
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        try:
            ann = json.loads(path.read_text())
            category = ann["category"]
            src_kps = torch.tensor(ann["src_kps"], dtype=torch.float32).reshape(-1, 2)
            trg_kps = torch.tensor(ann["trg_kps"], dtype=torch.float32).reshape(-1, 2)
            src_box = torch.tensor(ann["src_bndbox"], dtype=torch.float32).reshape(4)
            trg_box = torch.tensor(ann["trg_bndbox"], dtype=torch.float32).reshape(4)
            src_name, trg_name = ann["src_imname"], ann["trg_imname"]
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise ImageReadError(f"SPair-71k annotation {str(path)!r} is unreadable: {err!r}") from err
        if src_kps.shape != trg_kps.shape:
            raise ImageReadError(
                f"SPair-71k annotation {str(path)!r}: {len(src_kps)} source vs {len(trg_kps)} target keypoints"
            )
        src_path = self.root / "JPEGImages" / category / src_name
        trg_path = self.root / "JPEGImages" / category / trg_name
        sample = {
            "source_points": src_kps,
            "target_points": trg_kps,
            "source_box": src_box,
            "target_box": trg_box,
            "pck_threshold": float(max(trg_box[2] - trg_box[0], trg_box[3] - trg_box[1])),
            "category": category,
            "name": path.stem,
            "source_path": src_path,
            "target_path": trg_path,
        }
        if self.load_images:
            sample["source_image"] = load_image(src_path)
            sample["target_image"] = load_image(trg_path)
        return self.transform(sample) if self.transform is not None else sample


# ----------------------------------------------------------------------------------------- homography maths
def read_opencv_matrix(path: str | os.PathLike, name: str | None = None) -> torch.Tensor:
    """A matrix from an OpenCV FileStorage XML file (``type_id="opencv-matrix"``: rows, cols, dt, data).

    ``name`` selects the node; by default the first matrix in the file. Returns float64 rows×cols.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as err:
        raise ImageReadError(f"cannot parse OpenCV XML {str(path)!r}: {err}") from err
    nodes = [n for n in root if n.get("type_id") == "opencv-matrix"]
    if name is not None:
        nodes = [n for n in nodes if n.tag == name]
    if not nodes:
        what = f"matrix {name!r}" if name else "an opencv-matrix node"
        raise ImageReadError(f"OpenCV XML {str(path)!r} has no {what}")
    node = nodes[0]
    try:
        rows, cols = int(node.findtext("rows")), int(node.findtext("cols"))
        values = [float(v) for v in (node.findtext("data") or "").split()]
    except (TypeError, ValueError) as err:
        raise ImageReadError(f"OpenCV XML {str(path)!r}, node {node.tag!r}: {err}") from err
    if len(values) != rows * cols:
        raise ImageReadError(f"OpenCV XML {str(path)!r}, node {node.tag!r}: {len(values)} values for {rows}×{cols}")
    return torch.tensor(values, dtype=torch.float64).reshape(rows, cols)


def project_points(homography: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply a 3×3 homography to K×2 (x, y) points; returns float64 K×2."""
    if homography.shape != (3, 3):
        raise ValueError(f"homography must be 3×3, got {tuple(homography.shape)}")
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be K×2 (x, y), got {tuple(points.shape)}")
    hom = torch.cat([points.double(), torch.ones(len(points), 1, dtype=torch.float64)], dim=1) @ homography.double().T
    return hom[:, :2] / hom[:, 2:3]


def homography_from_points(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The homography (h33 = 1) mapping 4 source points exactly onto 4 target points (float64 3×3).

    Solves the 8×8 direct linear system: for each pair, x' (h31 x + h32 y + 1) = h11 x + h12 y + h13 and the
    same for y'.
    """
    if source.shape != (4, 2) or target.shape != (4, 2):
        raise ValueError(f"source and target must be 4×2, got {tuple(source.shape)} and {tuple(target.shape)}")
    s, t = source.double(), target.double()
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(s.tolist(), t.tolist()):
        rows.append([x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y])
        rows.append([0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y])
        rhs += [u, v]
    h = torch.linalg.solve(torch.tensor(rows, dtype=torch.float64), torch.tensor(rhs, dtype=torch.float64))
    return torch.cat([h, torch.ones(1, dtype=torch.float64)]).reshape(3, 3)


def warp_perspective(image: torch.Tensor, homography: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Warp an image by a homography: ``out(p) = image(H⁻¹ p)``, bilinear, zeros outside the source.

    Args:
        image: (C, H, W) floating tensor.
        homography: 3×3, source pixel (x, y) → output pixel (x, y).
        size: output (height, width); defaults to the input size.
    Returns:
        (C, h, w) tensor of ``image``'s dtype.
    """
    if image.ndim != 3 or not torch.is_floating_point(image):
        raise ValueError(f"image must be a floating (C, H, W) tensor, got {image.dtype} {tuple(image.shape)}")
    in_h, in_w = image.shape[-2:]
    out_h, out_w = size if size is not None else (in_h, in_w)
    ys, xs = torch.meshgrid(
        torch.arange(out_h, dtype=torch.float64), torch.arange(out_w, dtype=torch.float64), indexing="ij"
    )
    grid_pts = torch.stack([xs.flatten(), ys.flatten()], dim=1)
    src = project_points(torch.linalg.inv(homography.double()), grid_pts)
    # grid_sample with align_corners=True puts −1/+1 on the first/last pixel centres
    norm_x = 2.0 * src[:, 0] / max(in_w - 1, 1) - 1.0
    norm_y = 2.0 * src[:, 1] / max(in_h - 1, 1) - 1.0
    grid = torch.stack([norm_x, norm_y], dim=1).reshape(1, out_h, out_w, 2)
    warped = F.grid_sample(
        image.unsqueeze(0).double(), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return warped.squeeze(0).to(image.dtype)


def keypoint_grid(height: int, width: int, step: int, margin: int | None = None) -> torch.Tensor:
    """Regular grid of (x, y) pixel positions every ``step`` pixels, ``margin`` (default step // 2) from the
    edges; float32 K×2, row-major."""
    check_positive_int(step, "step")
    margin = step // 2 if margin is None else margin
    ys = torch.arange(margin, height - margin, step, dtype=torch.float32)
    xs = torch.arange(margin, width - margin, step, dtype=torch.float32)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


def _pair_sample(source: torch.Tensor, target: torch.Tensor, homography: torch.Tensor, step: int) -> dict:
    points = keypoint_grid(source.shape[-2], source.shape[-1], step)
    projected = project_points(homography, points)
    th, tw = target.shape[-2:]
    valid = (projected[:, 0] >= 0) & (projected[:, 0] <= tw - 1) & (projected[:, 1] >= 0) & (projected[:, 1] <= th - 1)
    return {
        "source": source,
        "target": target,
        "homography": homography,
        "source_points": points,
        "target_points": projected.float(),
        "valid": valid,
        "pck_threshold": float(max(th, tw)),
    }


class HomographyPair(torch.utils.data.Dataset):
    """A real image pair related by a known homography: by default OpenCV's graf1.png → graf3.png with
    H1to3p.xml (the Oxford affine-region "graffiti" pair, shipped in the Debian package ``opencv-doc`` under
    ``usr/share/doc/opencv-doc/examples/data``).

    A one-item dataset; the item is ``{"source", "target": float32 3×H×W, "homography": float64 3×3 (source
    pixel → target pixel), "source_points": float32 K×2 (grid every ``grid_step`` px), "target_points": their
    images under the homography, "valid": bool K (projected inside the target), "pck_threshold": max(H, W) of
    the target}``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        source: str = "graf1.png",
        target: str = "graf3.png",
        homography: str = "H1to3p.xml",
        grid_step: int = 16,
    ):
        self.root = Path(root)
        layout = f"<root>/{source}, <root>/{target}, <root>/{homography} (OpenCV FileStorage XML)"
        for name in (source, target, homography):
            if not (self.root / name).is_file():
                raise DatasetLayoutError("HomographyPair", self.root, name, layout)
        self.source_path, self.target_path = self.root / source, self.root / target
        self.homography = read_opencv_matrix(self.root / homography)
        if self.homography.shape != (3, 3):
            raise ImageReadError(f"{self.root / homography}: expected a 3×3 matrix, got {tuple(self.homography.shape)}")
        self.grid_step = check_positive_int(grid_step, "grid_step")

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict:
        if index not in (0, -1):
            raise IndexError(f"HomographyPair has one item, got index {index}")
        return _pair_sample(load_image(self.source_path), load_image(self.target_path), self.homography, self.grid_step)


def random_homography(
    height: int, width: int, max_shift: float = 0.15, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A mild random homography: each image corner moves by up to ``max_shift`` of the image size along each
    axis (uniformly), and H maps the original corners onto the moved ones. float64 3×3."""
    if not 0 <= max_shift < 0.5:
        raise ValueError(f"max_shift must lie in [0, 0.5), got {max_shift}")
    corners = torch.tensor(
        [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=torch.float64
    )
    scale = torch.tensor([width - 1, height - 1], dtype=torch.float64)
    offsets = (torch.rand(4, 2, generator=generator, dtype=torch.float64) * 2 - 1) * max_shift * scale
    return homography_from_points(corners, corners + offsets)


def synthetic_homography_pairs(
    image: torch.Tensor,
    n: int,
    generator: torch.Generator | None = None,
    max_shift: float = 0.15,
    grid_step: int = 16,
) -> list[dict]:
    """``n`` pairs (image, image warped by a random mild homography) with ground-truth correspondences.

    Args:
        image: float (3, H, W) source photo.
        n: number of pairs.
        generator: torch.Generator for reproducible homographies.
        max_shift: corner displacement bound, as a fraction of the image size (see :func:`random_homography`).
        grid_step: spacing of the source keypoint grid in pixels.
    Returns:
        list of dicts with the keys of :class:`HomographyPair` items; the target has the source's size and is
        zero where the warp leaves the source.
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or not torch.is_floating_point(image):
        raise ValueError("image must be a floating (C, H, W) tensor")
    check_positive_int(n, "n")
    h, w = image.shape[-2:]
    pairs = []
    for _ in range(n):
        hom = random_homography(h, w, max_shift, generator)
        pairs.append(_pair_sample(image, warp_perspective(image, hom), hom, grid_step))
    return pairs


# ------------------------------------------------------------------------------------------- registration
def _spair_pairs(root, select: Callable, prepare: Callable, split: str = "test", category: str | None = None):
    data = SPairDataset(root, split=split, category=category)
    for i in select(list(range(len(data)))):
        s = data[i]
        yield {"source": s["source_image"], "target": s["target_image"], "source_points": s["source_points"],
               "target_points": s["target_points"], "pck_threshold": s["pck_threshold"],
               "valid": torch.ones(len(s["source_points"]), dtype=torch.bool),
               "source_path": s["source_path"], "target_path": s["target_path"]}


def _homography_pairs(root, select: Callable, prepare: Callable, grid_step: int = 16):
    data = HomographyPair(root, grid_step=grid_step)
    s = data[0]
    yield {**{k: s[k] for k in ("source", "target", "source_points", "target_points", "pck_threshold", "valid")},
           "source_path": data.source_path, "target_path": data.target_path}


def _synthetic_pairs(root, select: Callable, prepare: Callable, pairs_per_image: int = 2, max_shift: float = 0.15,
                     grid_step: int = 16, seed: int = 0):
    """Pairs of every photo of the folder ``root`` (after ``prepare``) and its seeded random homographies; each
    pair's ``tag`` names its generated target (seed, position, shift), so the target's features can be cached."""
    import zlib

    from .images import list_images

    photos = select(sorted(list_images(root)))
    if not photos:
        raise ValueError(f"synthetic: no photos in {str(root)!r}")
    for path in photos:
        photo = prepare(load_image(path))
        # one generator per photo, seeded from its name: its pairs do not depend on which photos are used
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(Path(path).name.encode()))
        pairs = synthetic_homography_pairs(photo, pairs_per_image, generator=generator, max_shift=max_shift,
                                           grid_step=grid_step)
        for j, s in enumerate(pairs):
            yield {**s, "source_path": path, "target_path": path, "tag": f"synthetic|{seed}|{j}|{max_shift}"}


register_dataset("correspondence", "spair", _spair_pairs, options=("split", "category"), help="SPair-71k pairs")
register_dataset("correspondence", "homography", _homography_pairs, options=("grid_step",),
                 help="graf1/graf3 with H1to3p.xml (opencv-doc)")
register_dataset("correspondence", "synthetic", _synthetic_pairs,
                 options=("pairs_per_image", "max_shift", "grid_step", "seed"),
                 help="seeded random homographies of every photo in a folder")


__all__ = [
    "SPairDataset",
    "HomographyPair",
    "read_opencv_matrix",
    "project_points",
    "homography_from_points",
    "warp_perspective",
    "keypoint_grid",
    "random_homography",
    "synthetic_homography_pairs",
]
