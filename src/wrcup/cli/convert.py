"""``wrcup convert authors CKPT.pth --out X.safetensors``: a network the authors of WRC trained → a wrcup checkpoint."""
from __future__ import annotations

from pathlib import Path


def add_convert_parser(sub) -> None:
    from wrcup.backbones.registry import DEFAULT_BACKBONE

    p = sub.add_parser("convert", help="turn upsamplers trained elsewhere into wrcup checkpoints",
                       description="Convert upsamplers trained with other code into wrcup checkpoints.")
    kinds = p.add_subparsers(dest="source", required=True)
    a = kinds.add_parser(
        "authors", help="a network trained with the authors' WRC code (their .pth file)",
        description="Read a .pth file written by the authors' WRC code (a training checkpoint with 'wrc', "
                    "'epoch' and 'cfg', a dict with 'state_dict', or a bare state dict) without running code "
                    "from it, check every entry against the network, and write a wrcup checkpoint "
                    "(operator wrc-reference, no residual) that wrcup.load serves.")
    a.add_argument("checkpoint", help="their .pth file")
    a.add_argument("--out", required=True, help="the .safetensors file to write (a .json copy of the metadata "
                                                "is written beside it)")
    a.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help=f"the backbone the network was trained on (default {DEFAULT_BACKBONE}: 384 channels, "
                        "patch 14); its channel count must match the weights'")
    a.set_defaults(func=_run_convert_authors)


def _run_convert_authors(args) -> int:
    from wrcup.models.authors import convert_authors_checkpoint
    from wrcup.models.checkpoint import save_checkpoint

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must name a .safetensors file, got {str(out)!r}")
    state, metadata = convert_authors_checkpoint(args.checkpoint, backbone=args.backbone)
    save_checkpoint(out, state, metadata)
    source = metadata["source"]
    print(f"wrote {out}: {metadata['operator']} network, dim {metadata['dim']}, backbone {metadata['backbone']} "
          f"(patch {metadata['patch_size']}), from {source['file']} (epoch {source['epoch']}, sha256 "
          f"{source['sha256'][:12]}…)")
    return 0
