"""The settings of a training run (:class:`TrainConfig`, recorded in every checkpoint) and which of them may change
when a run is resumed."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

LOSS_NAMES = ("local", "global", "consistency", "full")
# settings a resumed run may change: where it runs and finds its images and target cache, how often it saves
# and whether it shows progress; none of them changes the trajectory (the image count is checked). Every other
# setting must equal the one recorded in the run's checkpoint. (``wrcup train --stop-at`` is per invocation.)
RESUME_MAY_DIFFER = ("out", "data", "device", "progress", "checkpoint_every", "keep_every", "cache_targets", "ema")
# ``wrcup train`` flags that are not settings of the run; every other flag names the setting it sets, under its
# own name unless listed in TRAIN_FLAG_FIELDS (tests/train/test_trainer.py checks both)
PER_INVOCATION_FLAGS = ("resume", "stop_at")
PRECISIONS = ("auto", "float32", "bfloat16")
TRAIN_FLAG_FIELDS = {"losses": "loss_weights", "no_augment": "augment", "no_fast": "fast"}


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in the checkpoint metadata)."""

    data: list[str]
    out: str
    backbone: str = "dinov2-s14-imgfocus"
    backbone_weights: str | None = None
    operator: str = "wrc-reference"
    residual: bool = False
    steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 1e-5
    warmup: int = 0
    schedule: str = "cosine"
    # the high-res view side; a list trains on several grid scales (e.g. [448, 896]: 16→32 and 32→64 token
    # grids), each step on one scale drawn from (seed, step) with the relative frequencies ``scale_mix``
    high_res: int | list[int] = 448
    scale_mix: list[float] | None = None
    crops: int = 4
    crop_align: int = 28
    # the paper's recipe sums local + global + consistency with weight 1; "full" (off by default) compares the prediction
    # with the backbone's features of the whole high-res view
    loss_weights: dict = field(default_factory=lambda: {"local": 1.0, "global": 1.0, "consistency": 1.0, "full": 0.0})
    augment: bool = True
    cache_targets: str | None = None
    checkpoint_every: int = 500
    # every N steps also keep a weights + metadata snapshot step-NNNNNN.safetensors (for learning curves); 0: off
    keep_every: int = 0
    # decay of an exponential moving average of the weights and BatchNorm statistics kept beside the run
    # (torch.optim.swa_utils.AveragedModel, updated after every optimiser step); 0: none. With it, snapshots and
    # the finished run also write NAME.ema.safetensors. It may be switched on at resume: the average then starts
    # from the weights after the first resumed step. The trained weights themselves do not depend on it.
    ema: float = 0.0
    seed: int = 0
    # the seed of the cached targets' fixed crops (``cache_targets``); None: ``seed``. A second seed of a run can
    # keep the first one's targets (target_seed = its seed): initialisation, batches and augmentations still change.
    target_seed: int | None = None
    device: str = "cpu"
    name: str = "wrc"
    progress: bool = True
    # the faster training step (same losses and update, different floating-point rounding): the WRC layers
    # compute their high-res weight convolution factored (wrcup.ops.layer.conv_of_bilinear_prior), AdamW runs
    # fused, and on CPU the clean and augmented passes overlap in two threads (train_step). False keeps the
    # original step, e.g. to compare speed (benchmarks/train.py) or to continue a run started without it.
    fast: bool = True
    # "auto": bfloat16 autocast on CUDA, float32 elsewhere; "bfloat16": autocast everywhere (on CPU it pays only
    # where the CPU has bfloat16 matrix units, e.g. Intel AMX; benchmarks/train.py); "float32": never. The WRC
    # solve runs in float32 under any setting.
    precision: str = "auto"

    def validate(self) -> None:
        from .._checks import check_choice, check_positive_int  # here: the CLI imports this module before torch

        if not self.data:
            raise ValueError("data: give at least one image folder")
        from ..nn import operator_entry

        operator_entry(self.operator)  # ValueError listing the registered operators
        check_positive_int(self.steps, "steps")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.grad_accum, "grad_accum")
        check_positive_int(self.crops, "crops", minimum=0)
        check_choice(self.schedule, "schedule", ("cosine", "constant"))
        check_choice(self.precision, "precision", PRECISIONS)
        unknown = set(self.loss_weights) - set(LOSS_NAMES)
        if unknown:
            raise ValueError(f"loss_weights has unknown losses {sorted(unknown)}; expected a subset of {LOSS_NAMES}")
        check_positive_int(self.keep_every, "keep_every", minimum=0)
        scales = self.scales()
        if not scales or any(isinstance(r, bool) or not isinstance(r, int) or r <= 0 or r % 2 for r in scales):
            raise ValueError(f"high_res must be a positive even size or a list of them, got {self.high_res!r}")
        if len(set(scales)) != len(scales):
            raise ValueError(f"high_res lists a size twice: {self.high_res!r}")
        if self.scale_mix is not None:
            mix = list(self.scale_mix)
            if len(mix) != len(scales) or any(not float(w) > 0 for w in mix):
                raise ValueError(f"scale_mix must give one positive weight per high_res size {scales}, "
                                 f"got {self.scale_mix!r}")
        if isinstance(self.ema, bool) or not isinstance(self.ema, (int, float)) or not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be a decay in [0, 1) (0: no moving average), got {self.ema!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def crop_seed(self) -> int:
        """The seed of the cached targets' fixed crops: ``target_seed``, or ``seed`` when it is None."""
        return self.seed if self.target_seed is None else self.target_seed

    def scales(self) -> list[int]:
        """The high-res view sizes trained on (one unless ``high_res`` is a list)."""
        return list(self.high_res) if isinstance(self.high_res, (list, tuple)) else [self.high_res]

    def loss_weight_values(self) -> dict[str, float]:
        """The weight of every loss in :data:`LOSS_NAMES` order (an absent loss weighs 0)."""
        return {k: float(self.loss_weights.get(k, 0.0)) for k in LOSS_NAMES}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def resume_differences(self, recorded: "TrainConfig") -> list[tuple[str, object, object]]:
        """``(setting, this value, recorded value)`` for every setting outside :data:`RESUME_MAY_DIFFER` that
        differs from the run being resumed (loss weights compared as weights, an absent loss = 0)."""
        def comparable(cfg, name):
            return cfg.loss_weight_values() if name == "loss_weights" else getattr(cfg, name)

        return [(f.name, getattr(self, f.name), getattr(recorded, f.name)) for f in fields(self)
                if f.name not in RESUME_MAY_DIFFER and comparable(self, f.name) != comparable(recorded, f.name)]
