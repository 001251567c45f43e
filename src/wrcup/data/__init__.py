"""wrcup.data: image loading and readers for the evaluation datasets.

Images are float32 3×H×W tensors in [0, 1]; label maps are int64 H×W (255 = ignore); boxes are float32 K×4
[x0, y0, x1, y1] in pixel-edge coordinates; keypoints are float32 K×2 (x, y). Each reader documents the
directory layout it expects and raises :class:`DatasetLayoutError` naming the root and the missing part.
Readers register themselves by task kind in :mod:`wrcup.data.registry` (``list_datasets(kind)``).
"""
# imported first so that the readers register in the order the task help lists them
from . import detection, segmentation  # noqa: F401  (isort: skip)
from .correspondence import (
    HomographyPair,
    SPairDataset,
    homography_from_points,
    keypoint_grid,
    project_points,
    random_homography,
    read_opencv_matrix,
    synthetic_homography_pairs,
    warp_perspective,
)
from .davis import DavisDataset, DavisForeground, davis_fg_split, davis_first_frame_boxes, mask_box, parse_davis_list
from .depth import NYUv2DepthDataset
from .detection import Coco20kDataset, VOCDetectionDataset, parse_voc_xml
from .registry import DatasetEntry, get_dataset, list_datasets, register_dataset
from .images import (
    IMAGE_EXTENSIONS,
    DatasetLayoutError,
    ImageFolder,
    ImageReadError,
    center_crop,
    is_image_file,
    list_images,
    load_image,
    load_label,
    resize_short_side,
)
from .segmentation import (
    CAMVID_CLASSES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAINID,
    COCO_STUFF_USED_IDS,
    IGNORE_INDEX,
    VOC_CLASSES,
    ADE20KDataset,
    CamVidDataset,
    CityscapesDataset,
    CocoStuffDataset,
    SegmentationDataset,
    VOCSegmentationDataset,
)

__all__ = [
    "DatasetEntry",
    "get_dataset",
    "list_datasets",
    "register_dataset",
    "IMAGE_EXTENSIONS",
    "DatasetLayoutError",
    "ImageFolder",
    "ImageReadError",
    "center_crop",
    "is_image_file",
    "list_images",
    "load_image",
    "load_label",
    "resize_short_side",
    "DavisDataset",
    "DavisForeground",
    "davis_fg_split",
    "davis_first_frame_boxes",
    "mask_box",
    "parse_davis_list",
    "SegmentationDataset",
    "CamVidDataset",
    "VOCSegmentationDataset",
    "ADE20KDataset",
    "CityscapesDataset",
    "CocoStuffDataset",
    "CAMVID_CLASSES",
    "VOC_CLASSES",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_ID_TO_TRAINID",
    "COCO_STUFF_USED_IDS",
    "IGNORE_INDEX",
    "NYUv2DepthDataset",
    "VOCDetectionDataset",
    "Coco20kDataset",
    "parse_voc_xml",
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
