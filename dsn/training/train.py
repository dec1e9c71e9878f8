"""Training DetailSemNet: every backbone pass scores many pairs, on a CPU, a GPU or many of either.

Each step samples a few writers, embeds their genuine and forged signatures once, and
scores *all* pairs in the batch: genuine-genuine (positive), genuine-forged of the same
writer (skilled forgery), same-name classes of two persons (cross-media hard negatives)
and genuine pairs of different writers (random forgery). Both distance parts also get
their own double-margin loss, so the structural (optimal-transport) branch has to learn
on its own instead of hiding behind the global distance.

The backbone runs in bf16 where the hardware has it (``dsn.precision``), optionally
compiled; batches are prepared by DataLoader workers while a step runs; several
processes (``torchrun``) each take other writers of the same step and average gradients.
Runs are resumable: ``<out>/last`` holds model, optimizer and step after every epoch,
swapped in atomically; each step's randomness is derived from (seed, step), so a resumed
run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm  # text bars everywhere: tqdm.auto wants ipywidgets in notebooks ("IProgress not found")

from dsn.data.dataset import ImageCache, SignatureImage, protocol_pairs, split_images_of
from dsn.data.pack import read_pack
from dsn.data.strokes import uniform_strokes_uint8
from dsn.evaluation.metrics import equal_error_rate, summarize
from dsn.evaluation.scoring import embed_cache, score_pairs
from dsn.hub.modelcard import train_command, write_model_card
from dsn.loading import ModelInfo, load
from dsn.model.detailsemnet import DetailSemNet
from dsn.training import checkpoint, engine
from dsn.training.config import TrainConfig
from dsn.training.run_folder import CONFIG_NAME, config_to_write, holds_a_run
from dsn.training.sampling import BatchStream, WriterIndex, batch_loader, name_groups, subset_writers, writer_weights
from dsn.training.step import TrainStep, WriterHead, learning_rate


@dataclass
class TrainingData:
    """What a run trains and validates on, from dataset folders or from a pack."""

    train_images: list[SignatureImage]
    caches: dict[int, ImageCache]  # image size -> preprocessed train images
    val_images: list[SignatureImage]
    val_cache: ImageCache | None  # None on processes that do not validate
    groups: dict[int, int]
    datasets: tuple[str, ...]
    weights: dict[int, float] | None = None  # writer draw weights (cross-media classes per person)


def as_model_input(cache: ImageCache, cfg: TrainConfig) -> ImageCache:
    """Validation images as the shipped model will see them; train images stay letterboxed and are
    turned into uniform strokes after augmentation (``BatchStream``)."""
    if cfg.preprocessing == "letterbox":
        return cache
    return ImageCache.from_pixels(cache.images, uniform_strokes_uint8(cache.pixels), mode="strokes")


def load_data(cfg: TrainConfig, validate_here: bool = True) -> TrainingData:
    sizes = {cfg.img_size} | ({cfg.warm_size} if cfg.warm_epochs > 0 else set())
    if cfg.packed:
        pack = read_pack(cfg.packed)
        train = subset_writers(pack.images["train"], cfg.train_writers, cfg.seed)
        chosen = set(train)
        keep = np.array([im in chosen for im in pack.images["train"]], dtype=bool)
        full = {size: pack.cache("train", size) for size in sizes}
        caches = {size: ImageCache.from_pixels(train, c.pixels[keep]) for size, c in full.items()}
        val = pack.images["val"]
        val_cache = as_model_input(pack.cache("val", cfg.img_size), cfg) if validate_here else None
        return TrainingData(train, caches, val, val_cache, pack.groups, tuple(pack.datasets), pack.weights)
    train = subset_writers(split_images_of(cfg.data, "train"), cfg.train_writers, cfg.seed)
    val = split_images_of(cfg.data, "val")  # pooled: one threshold for every dataset trained on
    caches = {size: ImageCache(train, size, progress=validate_here) for size in sizes}
    val_cache = as_model_input(ImageCache(val, cfg.img_size), cfg) if validate_here else None
    datasets = tuple(Path(root).name for root in cfg.data)
    return TrainingData(train, caches, val, val_cache, name_groups(cfg.data), datasets, writer_weights(cfg.data))


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


def write_run_metrics(folder: Path, cfg: TrainConfig, val: dict, state: dict, datasets: tuple[str, ...]) -> None:
    """metrics.json and a model card for a checkpoint fresh from training: validation numbers only, test not yet measured."""
    (folder / "metrics.json").write_text(json.dumps({"val": val, "epoch": state["epoch"], "step": state["step"]}, indent=2))
    config = asdict(cfg)
    write_model_card(folder, {"val": val}, config, train_command(config), datasets=datasets, training_hours=state["seconds"] / 3600)


def weight_average(model: DetailSemNet, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s weights (``decay`` > 0), else None; update it with ``update_average``.

    Made before any compilation, so it stays an eager copy; ``.module`` is a DetailSemNet that saves like one.
    """
    if decay <= 0:
        return None
    if decay >= 1:
        raise ValueError(f"ema_decay must be below 1 (0 turns the average off), not {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


def update_average(average: torch.optim.swa_utils.AveragedModel, model: DetailSemNet) -> None:
    """Average the weights; take the batch-norm statistics as they are now.

    Averaged statistics lag the weights and no longer describe their activations: a short run validated
    7 points worse with them, and as well as the raw weights with the current ones.
    """
    average.update_parameters(model)
    with torch.no_grad():
        for kept, current in zip(average.module.buffers(), model.buffers(), strict=True):
            kept.copy_(current)


def build_model(cfg: TrainConfig, device: torch.device) -> DetailSemNet:
    torch.manual_seed(cfg.seed)
    model = DetailSemNet(
        backbone=cfg.backbone,
        img_size=cfg.img_size,
        structural_weight=cfg.structural_weight,
        drop_path_rate=cfg.drop_path_rate,
        preprocessing=cfg.preprocessing,
    )
    if cfg.init:
        warm = load(cfg.init, allow_untrained=False)
        model.load_state_dict(warm.state_dict())
        print(f"warm start from {ModelInfo.of(warm).summary}")
    return model.to(device)


def run(cfg: TrainConfig, resume: bool = False, stop_after: int | None = None, allow_recipe_change: bool = False) -> dict:
    """Train (or resume) the run in ``cfg.out``; ``stop_after`` ends this call after that epoch,
    the learning-rate schedule still spanning ``cfg.epochs``, so a run can be split across sessions.
    Refuses (``RunFolderError``) to overwrite another run or to resume one with another recipe unless allowed."""
    record = config_to_write(cfg, resume, allow_recipe_change)
    cfg = replace(cfg, notes=record["notes"])  # recorded recipe changes reach the model card
    torch.set_num_threads(cfg.threads)
    rt = engine.start(cfg.device, cfg.precision)
    out = Path(cfg.out)
    try:
        if rt.main:
            out.mkdir(parents=True, exist_ok=True)
            (out / CONFIG_NAME).write_text(json.dumps(record, indent=2))
            print(f"training on {rt.describe()}")
        data = load_data(cfg, validate_here=rt.main)
        return _train(cfg, rt, data, out, resume, stop_after)
    finally:
        engine.finish(rt)


def _train(cfg: TrainConfig, rt: engine.Runtime, data: TrainingData, out: Path, resume: bool, stop_after: int | None) -> dict:
    images = data.train_images
    writers_all = torch.tensor([im.writer for im in images])
    genuine_all = torch.tensor([im.genuine for im in images])
    index = WriterIndex.of(images, data.groups, data.weights)
    groups_all = torch.tensor([index.group_of.get(im.writer, -1) for im in images]) if index.members else None
    val_pairs = protocol_pairs(data.val_images) if rt.main else []

    model = build_model(cfg, rt.device)
    writer_head = None
    parameters = list(model.parameters())
    if cfg.writer_loss_weight > 0:
        writer_head = WriterHead(model.backbone.num_features, sorted({im.writer for im in images})).to(rt.device)
        parameters += list(writer_head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = weight_average(model, cfg.ema_decay)
    state = {"epoch": 0, "step": 0, "best_eer": None, "history": [], "seconds": 0.0}
    if resume and holds_a_run(out):
        state = checkpoint.load_state(out / "last", model, optimizer, writer_head, ema)
        if rt.main:
            print(f"resumed from {out / 'last'} at epoch {state['epoch']}, step {state['step']}")
    step_module = engine.distribute(TrainStep(model, cfg, writer_head, rt.precision), rt, unused_parameters=writer_head is not None)
    if cfg.compile:
        engine.compile_backbone(model)
    compile_pending = cfg.compile
    trace = os.environ.get("DSN_TRACE_BATCHES")
    total_steps = cfg.epochs * cfg.steps_per_epoch

    last_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    deadline = time.monotonic() + 60 * cfg.max_minutes if cfg.max_minutes > 0 else None
    out_of_time = False
    while state["epoch"] < last_epoch and not out_of_time:
        epoch = state["epoch"]
        size = cfg.warm_size if epoch < cfg.warm_epochs else cfg.img_size
        cache = data.caches.get(size, data.caches[cfg.img_size])
        stream = BatchStream(
            cache, writers_all, genuine_all, index, cfg, state["step"], state["step"] + cfg.steps_per_epoch, rt.rank, rt.world
        )
        model.train()
        started = time.perf_counter()
        losses = []
        bar = tqdm(
            batch_loader(stream, cfg.workers),
            total=cfg.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs} @{size}px",
            disable=not rt.main,
        )
        for batch in bar:
            step = batch["step"]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, step, total_steps)

            def one_step(batch: dict = batch, step: int = step) -> dict:
                torch.manual_seed(cfg.seed * 1_000_003 + step + 7919 * rt.rank)  # drop-path draws differ between ranks
                optimizer.zero_grad(set_to_none=True)
                groups = groups_all[batch["index"]].to(rt.device) if groups_all is not None else None
                result = step_module(batch["images"].to(rt.device), batch["writers"].to(rt.device), batch["genuine"].to(rt.device), groups)
                result["loss"].backward()
                return result

            if compile_pending:
                result, seconds = engine.first_step_compiled(one_step, model)
                compile_pending = False
                if rt.main and seconds:
                    print(f"--compile: first step (compilation included) took {seconds:.1f} s")
            else:
                result = one_step()
            torch.nn.utils.clip_grad_norm_(parameters, 5.0)
            optimizer.step()
            if ema is not None:
                update_average(ema, model)
            losses.append(float(result["loss"].detach()))
            state["step"] = step + 1
            if trace:
                with open(f"{trace}.rank{rt.rank}.jsonl", "a") as handle:  # tests: which writers each process stepped on
                    handle.write(json.dumps({"step": step, "writers": sorted(set(batch["writers"].tolist()))}) + "\n")
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", pairs=result["pairs"])
            if deadline is not None and engine.any_rank(time.monotonic() > deadline, rt):
                out_of_time = True  # this epoch ends here: validated and checkpointed as usual
                if rt.main:
                    print(f"--max-minutes {cfg.max_minutes:g}: time is up after step {state['step']}")
                break
        state["seconds"] += time.perf_counter() - started
        state["epoch"] = epoch + 1
        if rt.main:
            _end_epoch(cfg, model, optimizer, writer_head, state, data, val_pairs, size, losses, out, ema)
        engine.barrier(rt)
    return state


def _end_epoch(cfg, model, optimizer, writer_head, state, data, val_pairs, size, losses, out, ema=None) -> None:
    """Rank 0: validate (the weight average, when the run keeps one), keep the best weights, write ``last/`` and the history."""
    epoch = state["epoch"]
    record = {"epoch": epoch, "step": state["step"], "size": size, "train_loss": float(np.mean(losses))}
    shipped = model if ema is None else ema.module
    with engine.eager(model):
        # validation runs at the final size only: scores of a model still training at a smaller size say little
        val = validate(shipped, data.val_cache, val_pairs) if size == cfg.img_size else None
        if val is not None:
            record.update({f"val_{k}": v for k, v in val.items()})
            model.config.threshold = shipped.config.threshold = float(val["threshold"])
            print(
                f"epoch {epoch}: loss {record['train_loss']:.4f}  val EER {100 * val['eer']:.2f}% "
                f"(global {100 * val['eer_global_only']:.2f}%, structural {100 * val['eer_structural_only']:.2f}%)  threshold {val['threshold']:.3f}"
            )
        else:
            print(f"epoch {epoch}: loss {record['train_loss']:.4f}  (warm-up at {size}px, not validated)")
        state["history"].append(record)
        if val is not None and (state["best_eer"] is None or val["eer"] <= state["best_eer"]):
            state["best_eer"] = val["eer"]
            with checkpoint.atomic_folder(out / "best", epoch) as scratch:
                shipped.save(scratch)
                write_run_metrics(scratch, cfg, val, state, data.datasets)
        also = (lambda folder: write_run_metrics(folder, cfg, val, state, data.datasets)) if val is not None else None
        checkpoint.save_state(out / "last", model, optimizer, state, writer_head, also=also, ema=ema)
    (out / "history.json").write_text(json.dumps(state["history"], indent=2))
