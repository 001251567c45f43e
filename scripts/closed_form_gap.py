#!/usr/bin/env python
"""How far the WRC closed form is from the exact minimiser on real features (docs/ALGORITHM.md#numerical-notes).

Runs the shipped model on one photo, takes the features entering its WRC layer, rebuilds that layer's weight maps
ω_L, ω_H and λ with plain torch (float64), and compares ``wrc_closed_form(mode="aligned")`` with
``wrc_exact_solve`` (same weights, same centred kernel) on the cropped output. Prints JSON.

    python scripts/closed_form_gap.py examples/coffee.jpg --size 224
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="a photo")
    parser.add_argument("--size", type=int, default=224, help="square input size in pixels (default: 224)")
    parser.add_argument("--model", default="wrc-dinov2-s14-imgfocus", help="bundle for wrcup.load (default: %(default)s)")
    args = parser.parse_args(argv)

    import wrcup
    from wrcup.data.images import load_image
    from wrcup.ops import wrc_closed_form, wrc_exact_solve

    model = wrcup.load(args.model)
    layer = model.upsampler.operator
    captured = {}
    layer.register_forward_hook(lambda module, inputs, output: captured.update(x=inputs[0].detach()))
    image = load_image(args.image)[None]
    image = F.interpolate(image, size=(args.size, args.size), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        model(image.clamp(0, 1))

        f64 = torch.float64
        x, p, s = captured["x"].to(f64), layer.padding, layer.scale
        y = F.pad(x, (p,) * 4, mode=layer.padding_mode)
        w_low = torch.log1p(F.conv2d(y, layer.w_conv_low.weight.to(f64), padding=1).square())
        prior = F.interpolate(y, scale_factor=s, mode="bilinear", align_corners=True)
        w_high = torch.log1p(F.conv2d(prior, layer.w_conv_high.weight.to(f64), padding=1).square())
        lam = F.softplus(layer.bias.to(f64)) + layer.eps
        kernel = layer.weight.to(f64)
        closed = wrc_closed_form(y, kernel, lam, w_low, w_high, s, prior, mode="aligned")
        exact, info = wrc_exact_solve(y, kernel, lam, w_low, w_high, s, prior, return_info=True)
    m = p * s
    closed, exact = closed[..., m:-m, m:-m], exact[..., m:-m, m:-m]
    per_channel = ((closed - exact).flatten(2).norm(dim=-1) / exact.flatten(2).norm(dim=-1)).flatten()
    print(json.dumps({
        "image": args.image, "size": args.size, "model": args.model, "operator": model.metadata["operator"],
        "layer_grid": list(y.shape[-2:]), "channels": int(y.shape[1]),
        "relative_l2_all": float((closed - exact).norm() / exact.norm()),
        "relative_l2_per_channel": {q: float(per_channel.quantile(v)) for q, v in
                                    (("p10", 0.1), ("median", 0.5), ("p90", 0.9))},
        "pcg_iterations": info.iterations, "pcg_residual": info.residual,
    }, indent=1))


if __name__ == "__main__":
    main()
