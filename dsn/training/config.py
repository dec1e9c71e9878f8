"""What a training run is: the recipe (model, data, schedule, losses) and how it runs (device, precision, workers)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from dsn.hub.dataset_facts import as_roots

# Fields that say how a run executes, not what it learns: a resumed run may change them.
EXECUTION_FIELDS = ("device", "precision", "compile", "workers", "threads", "packed", "max_minutes")
NOT_RECIPE = (*EXECUTION_FIELDS, "out", "notes")
TRAIN_INPUTS = ("letterbox", "strokes")  # preprocessing modes training can produce (dsn.model.config has "stretch" too)
PAIR_MEANS = ("all", "active")


@dataclass
class TrainConfig:
    data: list[str]  # dataset folders; several train one model on all their train writers
    out: str
    backbone: str = "dsnet_tiny"
    img_size: int = 224
    preprocessing: str = "letterbox"  # "strokes": train and ship on uniform strokes (dsn.data.strokes)
    warm_size: int = 128  # smaller inputs for the first warm_epochs: cheaper steps while features form
    warm_epochs: int = 0
    epochs: int = 30
    steps_per_epoch: int = 50
    writers_per_batch: int = 6  # per process: a run on N processes sees N x this many writers a step
    genuine_per_writer: int = 6
    forged_per_writer: int = 2
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    structural_weight: float = 1.0
    part_loss_weight: float = 0.5  # extra loss on each part (global, structural) alone
    random_negative_weight: float = 0.5
    pair_mean: str = "all"  # "active": the loss averages over pairs still inside their margin only (harder pairs weigh more)
    same_name_partners: float = 0.0  # share of batch writers drawn as a same-name partner of another (cross-media hard negatives)
    pos_margin: float = 0.3
    neg_margin: float = 0.9
    train_sinkhorn_iterations: int = 30
    augment: float = 1.0
    media_augment: float = 0.0  # probability of the media-bridging augmentation (stroke width, binarisation, paper)
    drop_path_rate: float = 0.05
    train_writers: int = 0  # 0: every train writer; N: a fixed, dataset-proportional subset (learning curves)
    writer_loss_weight: float = 0.0  # >0: also classify the batch's genuine signatures by writer (cosine softmax)
    ema_decay: float = 0.0  # >0: validate and ship an exponential moving average of the weights (e.g. 0.999)
    seed: int = 0
    threads: int = 2  # torch threads per process
    init: str = ""  # warm start: weights source (folder or hf://) whose weights the model starts from
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 where the hardware has it) | bf16 | fp32
    compile: bool = False  # torch.compile the backbone (eager if compilation fails)
    workers: int = 1  # DataLoader worker processes preparing the next batches (0: in the training process)
    packed: str = ""  # a file of `python -m dsn pack-data`: train from it instead of the dataset folders
    max_minutes: float = 0.0  # >0: end the run (validated, checkpointed) once this much training time is spent
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = as_roots(self.data)  # configs of single-dataset runs hold one folder
        for name, allowed in (("preprocessing", TRAIN_INPUTS), ("pair_mean", PAIR_MEANS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")


def recipe_changes(saved: dict, cfg: TrainConfig) -> dict[str, tuple[object, object]]:
    """Recipe fields (what the run learns) whose value in ``cfg`` differs from a run folder's saved config.

    A field the saved config lacks was added to the project after that run started; its default is what ran.
    Datasets are compared by folder name (a run may move to another machine); a packed run names none.
    """
    defaults = TrainConfig(data=[], out="")
    changes = {}
    for spec in fields(TrainConfig):
        if spec.name in NOT_RECIPE:
            continue
        old, new = saved.get(spec.name, getattr(defaults, spec.name)), getattr(cfg, spec.name)
        if spec.name == "data":
            old, new = [Path(root).name for root in as_roots(old)], [Path(root).name for root in new]
            if not old or not new:
                continue
        if old != new:
            changes[spec.name] = (old, new)
    return changes
