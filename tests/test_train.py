"""Training: batches score every pair once, the schedule is sane, and a short real run learns,
writes a loadable checkpoint with metrics and a card, and resumes exactly where it stopped."""

from __future__ import annotations

import itertools
import json
import shlex
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dsn.data.dataset import ImageCache, split_images
from dsn.hub.modelcard import check_model_card
from dsn.model.detailsemnet import DetailSemNet
from dsn.training.config import TrainConfig
from dsn.training.sampling import sample_batch, subset_writers
from dsn.training.step import WriterHead, batch_pairs, learning_rate, train_step
from dsn.training.train import run, update_average, weight_average

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
needs_cedar = pytest.mark.skipif(not (DATASETS / "cedar").is_dir(), reason=f"real datasets not found at {DATASETS}")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_batch_pairs_score_each_kind_once_and_weigh_kinds_as_wholes() -> None:
    # writer 1: genuine, genuine, forged; writer 2: genuine, forged
    writers = torch.tensor([1, 1, 1, 2, 2])
    genuine = torch.tensor([True, True, False, True, False])
    a, b, positive, weight = batch_pairs(writers, genuine, random_weight=0.5)
    pairs = {(int(i), int(j)) for i, j in zip(a, b)}
    assert len(pairs) == len(a), "a pair is scored twice"
    assert pairs == {(0, 1), (0, 2), (1, 2), (3, 4), (0, 3), (1, 3)}  # forgeries of other writers are not pairs
    assert all(genuine[i] for i, _ in pairs), "the genuine image must be the reference"
    assert positive.tolist() == [(i, j) == (0, 1) for i, j in zip(a.tolist(), b.tolist())]
    skilled = {(0, 2), (1, 2), (3, 4)}
    kinds = {"positive": {(0, 1)}, "skilled": skilled, "random": {(0, 3), (1, 3)}}
    totals = {
        kind: sum(float(w) for i, j, w in zip(a.tolist(), b.tolist(), weight) if (i, j) in members) for kind, members in kinds.items()
    }
    assert totals == pytest.approx({"positive": 1.0, "skilled": 1.0, "random": 0.5})


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    cfg = TrainConfig(data="", out="", lr=1e-3, warmup_steps=10)
    rates = [learning_rate(cfg, step, 100) for step in range(101)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(x >= y for x, y in itertools.pairwise(rates[9:])), "cosine decay must not increase"
    assert rates[100] == pytest.approx(0.0, abs=1e-12)


def test_training_command_reproduces_a_config_of_several_datasets() -> None:
    from dsn.cli import build_parser
    from dsn.hub.modelcard import train_command

    cfg = TrainConfig(data=["../d/cedar", "../d/bhsig-bengali"], out="runs/joint", init="runs/a/last", augment=0.7, seed=6)
    argv = shlex.split(train_command(asdict(cfg)))[3:]
    args = vars(build_parser().parse_args(argv))
    rebuilt = TrainConfig(**{k: v for k, v in args.items() if k in {f.name for f in fields(TrainConfig)}})
    assert rebuilt == cfg
    assert TrainConfig(data="../d/cedar", out="x").data == ["../d/cedar"], "configs of single-dataset runs still load"


def test_sample_batch_takes_whole_writers_without_repeats() -> None:
    from dsn.data.dataset import SignatureImage

    images = [SignatureImage(Path(f"{w}_{g}_{i}.png"), w, g, i) for w in range(1, 9) for g in (True, False) for i in range(5)]
    cfg = TrainConfig(data="", out="", writers_per_batch=3, genuine_per_writer=4, forged_per_writer=2)
    batch = sample_batch(images, cfg, np.random.default_rng(0))
    assert len(batch) == len(set(batch)) == 3 * (4 + 2)
    assert len({images[i].writer for i in batch}) == 3
    assert sample_batch(images, cfg, np.random.default_rng(0)) == batch, "batches must be reproducible from the seed"


def tiny_cedar(root: Path, train_writers: int = 4, val_writers: int = 2, per_class: int = 3) -> Path:
    """A few real CEDAR writers, linked (not copied) into the real layout with their own splits.json."""
    splits = json.loads((DATASETS / "splits.json").read_text())["cedar"]
    chosen = {"train": splits["train"][:train_writers], "val": splits["val"][:val_writers], "test": splits["test"][:1]}
    dataset = root / "cedar-few"
    for writer in itertools.chain.from_iterable(chosen.values()):
        for class_name in ("genuine", "forged"):
            folder = dataset / f"{writer:03d}" / class_name
            folder.mkdir(parents=True)
            for source in sorted((DATASETS / "cedar" / f"{writer:03d}" / class_name).glob("*.png"))[:per_class]:
                (folder / source.name).symlink_to(source)
    (root / "splits.json").write_text(json.dumps({"cedar-few": chosen}))
    return dataset


def small_config(dataset: Path, out: Path, epochs: int, writer_loss_weight: float = 0.0) -> TrainConfig:
    return TrainConfig(
        writer_loss_weight=writer_loss_weight,
        data=str(dataset),
        out=str(out),
        img_size=96,
        epochs=epochs,
        steps_per_epoch=4,
        writers_per_batch=3,
        genuine_per_writer=3,
        forged_per_writer=2,
        lr=3e-3,
        warmup_steps=2,
        augment=0.0,
        drop_path_rate=0.0,
        threads=1,
    )


def fixed_loss(model: DetailSemNet, dataset: Path, cfg: TrainConfig) -> float:
    """The loss over all training images at once, without augmentation: comparable before and after.

    Batch-norm uses the batch's statistics (train mode, no gradients): after a dozen steps the running
    averages are still mostly their initial values and say nothing about what was learned."""
    images = split_images(dataset, "train")
    cache = ImageCache(images, cfg.img_size)
    batch = torch.from_numpy(np.stack([cache[i] for i in range(len(images))]))[:, None]
    writers = torch.tensor([im.writer for im in images])
    genuine = torch.tensor([im.genuine for im in images])
    model.train()
    with torch.no_grad():
        return float(train_step(model, batch, writers, genuine, cfg)["loss"])


@pytest.mark.slow
@needs_cedar
@pytest.mark.parametrize("writer_loss_weight", [0.0, 0.2], ids=["pair-losses", "with-writer-classification"])
def test_short_real_run_learns_writes_a_checkpoint_and_resumes_exactly(tmp_path: Path, writer_loss_weight: float) -> None:
    dataset = tiny_cedar(tmp_path)

    straight = small_config(dataset, tmp_path / "straight", epochs=3, writer_loss_weight=writer_loss_weight)
    torch.manual_seed(straight.seed)
    before = fixed_loss(DetailSemNet(backbone="dsnet_tiny", img_size=96), dataset, straight)
    state = run(straight)
    assert state["epoch"] == 3 and state["step"] == 12 and len(state["history"]) == 3
    trained = DetailSemNet.load(tmp_path / "straight" / "last")
    assert fixed_loss(trained, dataset, straight) < 0.8 * before, "twelve steps on a dozen images must lower the loss"

    best = tmp_path / "straight" / "best"
    model = DetailSemNet.load(best)
    metrics = json.loads((best / "metrics.json").read_text())
    assert model.config.threshold == pytest.approx(metrics["val"]["threshold"])
    assert metrics["val"]["n_genuine_pairs"] == 2 * 3 and metrics["val"]["n_forged_pairs"] == 2 * 9
    card = (best / "README.md").read_text()
    assert check_model_card(card) == [] and "python -m dsn train" in card and f"{100 * metrics['val']['eer']:.2f}%" in card

    interrupted = small_config(dataset, tmp_path / "interrupted", epochs=3, writer_loss_weight=writer_loss_weight)
    assert run(interrupted, stop_after=2)["step"] == 8
    assert json.loads((tmp_path / "interrupted" / "last" / "train_state.json").read_text())["step"] == 8
    resumed = run(interrupted, resume=True)
    assert resumed["step"] == 12 and [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    straight_weights = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    resumed_weights = load_file(str(tmp_path / "interrupted" / "last" / "model.safetensors"))
    for name, value in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], value, rtol=1e-5, atol=1e-6, msg=f"resume diverged at {name}")
    if writer_loss_weight:  # the training-only head resumes too, and never enters the shipped weights
        heads = [load_file(str(tmp_path / run_name / "last" / "writer_head.safetensors")) for run_name in ("straight", "interrupted")]
        torch.testing.assert_close(heads[1]["weight"], heads[0]["weight"], rtol=1e-5, atol=1e-6)
        assert not any("writer" in name for name in straight_weights)
    else:
        assert not (tmp_path / "straight" / "last" / "writer_head.safetensors").exists()


def test_writer_subsets_are_nested_proportional_and_reproducible() -> None:
    from dsn.data.dataset import SignatureImage

    # dataset 0: 20 writers, dataset 1: 60 writers (ids shifted by 1000, as split_images_of does)
    images = [SignatureImage(Path(f"{w}_{i}.png"), w, True, i) for w in [*range(1, 21), *range(1001, 1061)] for i in range(2)]
    chosen = {n: {im.writer for im in subset_writers(images, n, seed=3)} for n in (8, 20, 40, 80)}
    assert {n: len(ws) for n, ws in chosen.items()} == {8: 8, 20: 20, 40: 40, 80: 80}
    assert sum(w < 1000 for w in chosen[8]) == 2 and sum(w < 1000 for w in chosen[40]) == 10, "each dataset keeps its share"
    assert chosen[8] <= chosen[20] <= chosen[40] <= chosen[80], "subsets of a learning curve are nested"
    assert {im.writer for im in subset_writers(images, 20, seed=3)} == chosen[20]
    assert {im.writer for im in subset_writers(images, 20, seed=4)} != chosen[20]
    assert subset_writers(images, 0, seed=3) == images


def test_writer_head_classifies_by_cosine_and_learns() -> None:
    torch.manual_seed(0)
    head = WriterHead(8, writers=[1005, 3, 1001])
    feature = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    writers = torch.tensor([3, 3, 1001, 1001, 1005, 1005])
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
    first = head.loss(feature, writers).item()
    for _ in range(20):
        optimizer.zero_grad()
        head.loss(feature, writers).backward()
        optimizer.step()
    assert head.loss(feature, writers).item() < 0.5 * first
    assert head.loss(2 * feature, writers).item() == pytest.approx(head.loss(feature, writers).item(), rel=1e-5), "cosine: scale-free"


def test_the_weight_average_follows_each_step_with_the_given_decay() -> None:
    """Weights are averaged; batch-norm statistics are today's (averaged ones lag the weights: 7 points worse on val)."""
    torch.manual_seed(0)
    model = DetailSemNet(backbone="dsnet_tiny", img_size=64)
    assert weight_average(model, 0.0) is None
    with pytest.raises(ValueError, match="below 1"):
        weight_average(model, 1.0)
    ema = weight_average(model, 0.9)
    name, parameter = "match_proj.weight", dict(model.named_parameters())["match_proj.weight"]
    first = parameter.detach().clone()
    update_average(ema, model)  # the first update copies the weights
    statistics = [n for n, _ in model.named_buffers() if n.endswith("running_var")]
    assert statistics, "the backbone has batch-norm statistics"
    with torch.no_grad():
        parameter.add_(1.0)
        dict(model.named_buffers())[statistics[0]].mul_(3.0)
    update_average(ema, model)
    torch.testing.assert_close(dict(ema.module.named_parameters())[name], 0.9 * first + 0.1 * (first + 1.0))
    for buffer, value in model.named_buffers():
        torch.testing.assert_close(dict(ema.module.named_buffers())[buffer], value, rtol=0, atol=0)


@pytest.mark.slow
@needs_cedar
def test_a_run_with_a_weight_average_validates_and_ships_it_and_resumes_it_exactly(tmp_path: Path) -> None:
    dataset = tiny_cedar(tmp_path)
    straight = small_config(dataset, tmp_path / "straight", epochs=2)
    straight.ema_decay = 0.6
    run(straight)
    last = tmp_path / "straight" / "last"
    average = {k.removeprefix("module."): v for k, v in load_file(str(last / "ema.safetensors")).items() if k.startswith("module.")}
    raw = load_file(str(last / "model.safetensors"))
    assert any(not torch.equal(average[k], raw[k]) for k in raw), "the average is not the last step's weights"

    interrupted = small_config(dataset, tmp_path / "interrupted", epochs=2)
    interrupted.ema_decay = 0.6
    run(interrupted, stop_after=1)
    folder = tmp_path / "interrupted"
    first = {k.removeprefix("module."): v for k, v in load_file(str(folder / "last" / "ema.safetensors")).items() if k != "n_averaged"}
    for name, value in load_file(str(folder / "best" / "model.safetensors")).items():  # what was validated and kept
        torch.testing.assert_close(value, first[name], rtol=0, atol=0)
    run(interrupted, resume=True)
    resumed = load_file(str(tmp_path / "interrupted" / "last" / "ema.safetensors"))
    for name, value in load_file(str(last / "ema.safetensors")).items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6, msg=f"the average diverged at {name}")

    # turned on when a run without it is resumed: it starts from the resumed weights, then follows the steps
    late = small_config(dataset, tmp_path / "late", epochs=2)
    run(late, stop_after=1)
    assert not (tmp_path / "late" / "last" / "ema.safetensors").exists()
    late.ema_decay = 0.6
    run(late, resume=True, allow_recipe_change=True)
    average = load_file(str(tmp_path / "late" / "last" / "ema.safetensors"))
    assert int(average["n_averaged"]) == 1 + late.steps_per_epoch, "the resumed weights, then one update a step"
    raw = load_file(str(tmp_path / "late" / "last" / "model.safetensors"))
    assert not torch.equal(average["module.match_proj.weight"], raw["match_proj.weight"])


def test_the_active_pair_mean_keeps_a_hard_pair_pull_whatever_the_easy_pairs() -> None:
    from dsn.training.losses import double_margin_loss

    genuine = torch.tensor([True, False, False, False, False])
    few_easy = torch.tensor([0.2, 0.5, 1.2, 1.3, 1.4], requires_grad=True)  # one hard forgery (0.5 < 0.9), three easy
    many_easy = torch.tensor([0.2, 0.5, 0.95, 0.95, 0.95, 1.0, 1.1], requires_grad=True)
    genuine_many = torch.tensor([True, False, False, False, False, False, False])
    pulls = {}
    for active in (False, True):
        for name, d, g in (("few", few_easy, genuine), ("many", many_easy, genuine_many)):
            (grad,) = torch.autograd.grad(double_margin_loss(d, g, active_only=active), d)
            pulls[active, name] = float(grad[1])
    assert pulls[True, "few"] == pytest.approx(pulls[True, "many"]) == pytest.approx(-2 * 0.4), "the hard pair alone sets the mean"
    assert abs(pulls[False, "many"]) < abs(pulls[False, "few"]), "over all pairs, more easy pairs dilute the hard one"
    assert double_margin_loss(torch.tensor([0.1, 1.5]), torch.tensor([True, False]), active_only=True) == 0
