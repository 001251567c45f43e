"""Turn a training snapshot into a shipped checkpoint: same weights, a shipped name, and where it came from.

Usage: python scripts/ship_checkpoint.py RUN/step-005000.ema.safetensors --name wrc-dinov2-s14-imgfocus-v2 \
           --out src/wrcup/checkpoints [--note TEXT]

The weights are copied bit for bit; the metadata keeps everything the run recorded (config, steps, losses, weight
average) and gains ``name``, ``finished`` (true: a released checkpoint, not a run in progress) and ``source``
(snapshot file name, its sha256, the run's name, the note). No training state is written, so the result is
weights + .json, like every shipped checkpoint.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wrcup._io import file_sha256
from wrcup.models.checkpoint import load_checkpoint, save_checkpoint


def ship(snapshot: str | Path, name: str, out_dir: str | Path, note: str = "") -> Path:
    """Write ``out_dir/name.safetensors`` (+ .json) from ``snapshot``; returns the new file's path."""
    snapshot = Path(snapshot)
    state, meta = load_checkpoint(snapshot)
    run_name = meta.get("config", {}).get("name", meta.get("name"))  # wrcup train records it in its config
    source = {"snapshot": snapshot.name, "sha256": file_sha256(snapshot), "run": run_name}
    if note:
        source["note"] = note
    released = {**meta, "name": name, "finished": True, "source": source}
    out = Path(out_dir) / f"{name}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(out, state, released)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("snapshot", help="a .safetensors snapshot written by wrcup train")
    p.add_argument("--name", required=True, help="the shipped name (file stem and metadata 'name')")
    p.add_argument("--out", required=True, help="folder to write NAME.safetensors and NAME.json to")
    p.add_argument("--note", default="", help="free text stored under metadata 'source'")
    a = p.parse_args(argv)
    if not Path(a.snapshot).is_file():
        p.error(f"snapshot: no such file: {a.snapshot}")
    print(ship(a.snapshot, a.name, a.out, a.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
