"""Training DetailSemNet on CPU-sized budgets: every backbone pass scores many pairs.

Each step samples a few writers, embeds their genuine and forged signatures
once, and scores *all* pairs in the batch: genuine-genuine (positive),
genuine-forged of the same writer (skilled forgery) and genuine pairs of
different writers (random forgery). Both distance parts also get their own
double-margin loss, so the structural (optimal-transport) branch has to learn
on its own instead of hiding behind the global distance.

Runs are resumable: ``<out>/last`` holds model, optimizer and step after every
epoch; each step's randomness is derived from (seed, step), so a resumed run
continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from dsn.data.dataset import WRITER_NAMESPACE, Augment, ImageCache, SignatureImage, protocol_pairs, split_images_of
from dsn.evaluation.metrics import equal_error_rate, summarize
from dsn.evaluation.scoring import embed_cache, score_pairs
from dsn.hub.modelcard import as_roots, train_command, write_model_card
from dsn.model.detailsemnet import DetailSemNet
from dsn.training.losses import double_margin_loss


@dataclass
class TrainConfig:
    data: list[str]  # dataset folders; several train one model on all their train writers
    out: str
    backbone: str = "dsnet_tiny"
    img_size: int = 224
    warm_size: int = 128  # smaller inputs for the first warm_epochs: cheaper steps while features form
    warm_epochs: int = 0
    epochs: int = 30
    steps_per_epoch: int = 50
    writers_per_batch: int = 6
    genuine_per_writer: int = 6
    forged_per_writer: int = 2
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    structural_weight: float = 1.0
    part_loss_weight: float = 0.5  # extra loss on each part (global, structural) alone
    random_negative_weight: float = 0.5
    pos_margin: float = 0.3
    neg_margin: float = 0.9
    train_sinkhorn_iterations: int = 30
    augment: float = 1.0
    drop_path_rate: float = 0.05
    train_writers: int = 0  # 0: every train writer; N: a fixed, dataset-proportional subset (learning curves)
    writer_loss_weight: float = 0.0  # >0: also classify the batch's genuine signatures by writer (cosine softmax)
    seed: int = 0
    threads: int = 2
    init: str = ""  # warm start: weights source (folder or hf://) whose weights the model starts from
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = as_roots(self.data)  # configs of single-dataset runs hold one folder


# ------------------------------------------------------------------ writers
def subset_writers(images: list[SignatureImage], count: int, seed: int) -> list[SignatureImage]:
    """The images of ``count`` writers, each dataset keeping its share of writers (largest remainder).

    Each dataset's writers are shuffled once per seed and the first ones taken, so the subsets of a
    learning curve are nested (the 25 writers are among the 50) and reproducible.
    """
    writers = sorted({im.writer for im in images})
    if count <= 0 or count >= len(writers):
        return images
    by_dataset: dict[int, list[int]] = {}
    for w in writers:
        by_dataset.setdefault(w // WRITER_NAMESPACE, []).append(w)
    quota = {k: count * len(ws) / len(writers) for k, ws in by_dataset.items()}
    take = {k: int(q) for k, q in quota.items()}
    for k in sorted(quota, key=lambda k: take[k] - quota[k])[: count - sum(take.values())]:
        take[k] += 1
    rng = np.random.default_rng(seed)
    chosen = {int(w) for k, ws in sorted(by_dataset.items()) for w in rng.permutation(ws)[: take[k]]}
    return [im for im in images if im.writer in chosen]


class WriterHead(torch.nn.Module):
    """Cosine-softmax writer classifier on the global feature: a training-only auxiliary task
    (as SigNet learns writer-discriminative features), dropped when the model is saved."""

    def __init__(self, dim: int, writers: list[int], scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("writer_ids", torch.tensor(sorted(writers)), persistent=False)
        self.weight = torch.nn.Parameter(torch.randn(len(writers), dim) * dim**-0.5)
        self.scale = scale

    def loss(self, feature: torch.Tensor, writers: torch.Tensor) -> torch.Tensor:
        logits = self.scale * torch.nn.functional.normalize(feature, dim=-1) @ torch.nn.functional.normalize(self.weight, dim=-1).T
        return torch.nn.functional.cross_entropy(logits, torch.searchsorted(self.writer_ids, writers))


# ------------------------------------------------------------------ batches
def sample_batch(images: list[SignatureImage], cfg: TrainConfig, rng: np.random.Generator) -> list[int]:
    """Positions of a batch: a few writers, each with genuine and forged signatures."""
    by_writer: dict[int, tuple[list[int], list[int]]] = {}
    for i, im in enumerate(images):
        by_writer.setdefault(im.writer, ([], []))[0 if im.genuine else 1].append(i)
    writers = rng.choice(sorted(by_writer), size=min(cfg.writers_per_batch, len(by_writer)), replace=False)
    batch: list[int] = []
    for w in writers:
        genuine, forged = by_writer[int(w)]
        batch += list(rng.choice(genuine, size=min(cfg.genuine_per_writer, len(genuine)), replace=False))
        if forged:
            batch += list(rng.choice(forged, size=min(cfg.forged_per_writer, len(forged)), replace=False))
    return [int(i) for i in batch]


def batch_pairs(writers: torch.Tensor, genuine: torch.Tensor, random_weight: float) -> tuple[torch.Tensor, ...]:
    """All scoreable pairs (a, b, is_genuine_pair, weight) of a batch, genuine image first.

    Weights make each kind of negative count as a whole (skilled 1, random ``random_weight``),
    however many pairs of it the batch holds.
    """
    n = len(writers)
    a, b = torch.triu_indices(n, n, offset=1)
    same = writers[a] == writers[b]
    ga, gb = genuine[a], genuine[b]
    positive = same & ga & gb
    skilled = same & (ga ^ gb)
    random = ~same & ga & gb
    keep = positive | skilled | random
    a, b = a[keep], b[keep]
    positive, skilled, random = positive[keep], skilled[keep], random[keep]
    # put the genuine signature on the reference side
    swap = skilled & ~genuine[a]
    a, b = torch.where(swap, b, a), torch.where(swap, a, b)
    weight = torch.ones(len(a))
    weight[skilled] = 1.0 / skilled.sum().clamp(min=1)
    weight[random] = random_weight / random.sum().clamp(min=1)
    weight[positive] = 1.0 / positive.sum().clamp(min=1)
    return a, b, positive, weight


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# ------------------------------------------------------------- checkpoints
def save_state(
    folder: Path, model: DetailSemNet, optimizer: torch.optim.Optimizer, state: dict, writer_head: WriterHead | None = None
) -> None:
    """Model + optimizer (+ writer head) as safetensors, counters as JSON: resumable without pickle."""
    model.save(folder)
    if writer_head is not None:
        save_file(writer_head.state_dict(), str(folder / "writer_head.safetensors"))
    opt = optimizer.state_dict()
    tensors = {f"{pid}.{key}": value for pid, slots in opt["state"].items() for key, value in slots.items() if torch.is_tensor(value)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(json.dumps(opt["param_groups"]))
    (folder / "train_state.json").write_text(json.dumps(state, indent=2))


def load_state(folder: Path, model: DetailSemNet, optimizer: torch.optim.Optimizer, writer_head: WriterHead | None = None) -> dict:
    model.load_state_dict(DetailSemNet.load(folder).state_dict())
    if writer_head is not None:
        writer_head.load_state_dict(load_file(str(folder / "writer_head.safetensors")))
    flat = load_file(str(folder / "optimizer.safetensors"))
    slots: dict[int, dict] = {}
    for name, value in flat.items():
        pid, key = name.split(".", 1)
        slots.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": slots, "param_groups": json.loads((folder / "optimizer.json").read_text())})
    return json.loads((folder / "train_state.json").read_text())


# ---------------------------------------------------------------- training
def validate(model: DetailSemNet, cache: ImageCache, pairs: list) -> dict:
    emb = embed_cache(model, cache, progress=False)
    scores = score_pairs(model, emb, pairs)
    eer, threshold = equal_error_rate(scores.distance, scores.genuine)
    result = summarize(scores.distance, scores.genuine, threshold)
    result["eer_global_only"] = equal_error_rate(scores.global_distance, scores.genuine)[0]
    result["eer_structural_only"] = equal_error_rate(scores.structural_distance, scores.genuine)[0]
    result["eer"], result["threshold"] = eer, threshold
    result["max_marginal_error"] = float(scores.marginal_error.max())
    return result


def train_step(
    model: DetailSemNet,
    images: torch.Tensor,
    writers: torch.Tensor,
    genuine: torch.Tensor,
    cfg: TrainConfig,
    writer_head: WriterHead | None = None,
) -> dict:
    emb = model.embed(images)
    a, b, positive, weight = batch_pairs(writers, genuine, cfg.random_negative_weight)
    result = model.compare(emb[a], emb[b], iterations=cfg.train_sinkhorn_iterations)

    def loss_of(distance: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return double_margin_loss(distance, positive, cfg.pos_margin * scale, cfg.neg_margin * scale, weight)

    main = loss_of(result.distance)
    # each part alone must also separate (its margins scaled by its share of the total)
    share = 1.0 / (1.0 + cfg.structural_weight)
    parts = loss_of(result.global_distance, share) + loss_of(
        result.structural_distance * cfg.structural_weight, cfg.structural_weight * share
    )
    loss = main + cfg.part_loss_weight * parts
    if writer_head is not None and bool(genuine.any()):  # same backbone pass, one more task
        loss = loss + cfg.writer_loss_weight * writer_head.loss(emb.global_feature[genuine], writers[genuine])
    return {"loss": loss, "main": main.detach(), "pairs": len(a)}


def write_run_metrics(folder: Path, cfg: TrainConfig, val: dict, state: dict) -> None:
    """metrics.json and a model card for a checkpoint fresh from training: validation numbers only, test not yet measured."""
    (folder / "metrics.json").write_text(json.dumps({"val": val, "epoch": state["epoch"], "step": state["step"]}, indent=2))
    config = asdict(cfg)
    write_model_card(
        folder,
        {"val": val},
        config,
        train_command(config),
        datasets=tuple(Path(root).name for root in cfg.data),
        training_hours=state["seconds"] / 3600,
    )


def run(cfg: TrainConfig, resume: bool = False, stop_after: int | None = None) -> dict:
    """Train (or resume) the run in ``cfg.out``; ``stop_after`` ends this call after that epoch,
    the learning-rate schedule still spanning ``cfg.epochs``, so a run can be split across sessions."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    train_images = subset_writers(split_images_of(cfg.data, "train"), cfg.train_writers, cfg.seed)
    val_images = split_images_of(cfg.data, "val")  # pooled: one threshold for every dataset trained on
    val_pairs = protocol_pairs(val_images)
    caches = {cfg.img_size: ImageCache(train_images, cfg.img_size)}
    if cfg.warm_epochs > 0 and cfg.warm_size != cfg.img_size:
        caches[cfg.warm_size] = ImageCache(train_images, cfg.warm_size)
    val_cache = ImageCache(val_images, cfg.img_size)
    writers_all = torch.tensor([im.writer for im in train_images])
    genuine_all = torch.tensor([im.genuine for im in train_images])

    torch.manual_seed(cfg.seed)
    model = DetailSemNet(
        backbone=cfg.backbone, img_size=cfg.img_size, structural_weight=cfg.structural_weight, drop_path_rate=cfg.drop_path_rate
    )
    if cfg.init:
        model.load_state_dict(DetailSemNet.load(cfg.init).state_dict())
        print(f"warm start from {cfg.init}")
    writer_head = None
    parameters = list(model.parameters())
    if cfg.writer_loss_weight > 0:
        writer_head = WriterHead(model.backbone.num_features, sorted({im.writer for im in train_images}))
        parameters += list(writer_head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "step": 0, "best_eer": None, "history": [], "seconds": 0.0}
    if resume and (out / "last" / "train_state.json").is_file():
        state = load_state(out / "last", model, optimizer, writer_head)
        print(f"resumed from {out / 'last'} at epoch {state['epoch']}, step {state['step']}")
    augment = Augment(cfg.augment)
    total_steps = cfg.epochs * cfg.steps_per_epoch

    last_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    while state["epoch"] < last_epoch:
        epoch = state["epoch"]
        size = cfg.warm_size if epoch < cfg.warm_epochs else cfg.img_size
        cache = caches.get(size, caches[cfg.img_size])
        model.train()
        started = time.perf_counter()
        losses = []
        bar = tqdm(range(cfg.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs} @{size}px")
        for _ in bar:
            step = state["step"]
            rng = np.random.default_rng([cfg.seed, step])
            torch.manual_seed(cfg.seed * 1_000_003 + step)
            idx = sample_batch(train_images, cfg, rng)
            images = torch.from_numpy(np.stack([augment(cache[i], rng) for i in idx]))[:, None]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, step, total_steps)
            out_step = train_step(model, images, writers_all[idx], genuine_all[idx], cfg, writer_head)
            optimizer.zero_grad(set_to_none=True)
            out_step["loss"].backward()
            torch.nn.utils.clip_grad_norm_(parameters, 5.0)
            optimizer.step()
            losses.append(float(out_step["loss"].detach()))
            state["step"] = step + 1
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", pairs=out_step["pairs"])
        state["seconds"] += time.perf_counter() - started
        state["epoch"] = epoch + 1
        record = {"epoch": epoch + 1, "step": state["step"], "size": size, "train_loss": float(np.mean(losses))}
        # validation runs at the final size only: scores of a model still training at a smaller size say little
        val = validate(model, val_cache, val_pairs) if size == cfg.img_size else None
        if val is not None:
            record.update({f"val_{k}": v for k, v in val.items()})
            model.config.threshold = float(val["threshold"])
            print(
                f"epoch {epoch + 1}: loss {record['train_loss']:.4f}  val EER {100 * val['eer']:.2f}% "
                f"(global {100 * val['eer_global_only']:.2f}%, structural {100 * val['eer_structural_only']:.2f}%)  threshold {val['threshold']:.3f}"
            )
        else:
            print(f"epoch {epoch + 1}: loss {record['train_loss']:.4f}  (warm-up at {size}px, not validated)")
        state["history"].append(record)
        if val is not None and (state["best_eer"] is None or val["eer"] <= state["best_eer"]):
            state["best_eer"] = val["eer"]
            model.save(out / "best")
            write_run_metrics(out / "best", cfg, val, state)
        save_state(out / "last", model, optimizer, state, writer_head)
        if val is not None:
            write_run_metrics(out / "last", cfg, val, state)
        (out / "history.json").write_text(json.dumps(state["history"], indent=2))
    return state
