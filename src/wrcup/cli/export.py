"""``wrcup export onnx``: write a loaded model (or its upsampler alone) as an ONNX graph."""
from __future__ import annotations


def add_export_parser(sub) -> None:
    from wrcup.models.names import DEFAULT_CHECKPOINT

    p = sub.add_parser("export", help="export a model to another format (ONNX)",
                       description="Export a trained model for other runtimes.")
    formats = p.add_subparsers(dest="format", required=True)
    o = formats.add_parser(
        "onnx", help="backbone + upsampler (or the upsampler alone) as ONNX, dynamic batch and size",
        description="Write an ONNX graph with dynamic batch, height and width. Default: input 'images' "
                    "(B×3×H×W in [0, 1], H and W multiples of the patch size, 14 for the embedded backbone) → "
                    "output 'features', equal to model(images). --upsampler-only: inputs 'image' (normalised by "
                    "the backbone) and 'features' (B×dim×H/p×W/p) → output 'upsampled'. Then compares the graph "
                    "in onnxruntime with PyTorch, if onnxruntime is installed. Needs: pip install 'wrcup[export]'.")
    o.add_argument("--model", default=DEFAULT_CHECKPOINT, help="shipped checkpoint name or .safetensors path")
    o.add_argument("--backbone-weights", default=None, help="local backbone weights (offline, non-embedded backbones)")
    o.add_argument("--out", required=True, help="the .onnx file to write")
    o.add_argument("--upsampler-only", action="store_true", help="export the upsampler alone")
    o.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    o.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch comparison")
    o.set_defaults(func=_run_export_onnx)


def _run_export_onnx(args) -> int:
    import wrcup
    from wrcup.models.export import check_onnx, export_onnx

    model = wrcup.load(args.model, backbone_weights=args.backbone_weights)
    path = export_onnx(model, args.out, upsampler_only=args.upsampler_only, opset=args.opset)
    what = "upsampler" if args.upsampler_only else "backbone + upsampler"
    message = f"wrote {path} ({what}; height and width: multiples of {model.backbone.patch_size})"
    if not args.no_check:
        try:
            error = check_onnx(path, model, upsampler_only=args.upsampler_only)
        except ImportError:
            message += "; not checked (onnxruntime is not installed)"
        else:
            message += f"; onnxruntime vs PyTorch, two sizes: max relative error {error:.1e}"
    print(message)
    return 0
