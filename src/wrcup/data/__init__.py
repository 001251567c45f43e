"""wrcup.data: image loading and readers for the evaluation datasets.

Images are float32 3×H×W tensors in [0, 1]; label maps are int64 H×W (255 = ignore); boxes are float32 K×4
[x0, y0, x1, y1] in pixel-edge coordinates; keypoints are float32 K×2 (x, y). Each reader documents the
directory layout it expects and raises :class:`DatasetLayoutError` naming the root and the missing part.
Readers register themselves by task kind in :mod:`wrcup.data.registry` (``list_datasets(kind)``).
"""
# imported first so that the readers register in the order the task help lists them
from . import detection, segmentation  # noqa: F401  (isort: skip)
from . import correspondence, davis, depth, images, registry  # noqa: F401  (their __all__ make the package's)
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
from .registry import DatasetEntry, get_dataset, list_datasets, register_dataset, unregister_dataset
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

# the package's names are its modules' (each module's __all__ lists them once)
__all__ = [name for module in (registry, images, davis, segmentation, depth, detection, correspondence)
           for name in module.__all__]
