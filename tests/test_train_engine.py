"""The training engine: the same numbers as the plain loop in fp32, bf16 steps, a compiler that
fails, batches prepared by workers, two processes on different writers, and the dataset pack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train import DATASETS, needs_cedar, small_config, tiny_cedar

from dsn.data.augment import Augment
from dsn.data.dataset import ImageCache, split_images, split_images_of
from dsn.data.pack import PackError, pack_datasets, quantize, read_pack
from dsn.model.detailsemnet import DetailSemNet
from dsn.training import engine
from dsn.training.sampling import BatchStream, WriterIndex, sample_batch
from dsn.training.step import learning_rate, train_step
from dsn.training.train import run

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def plain_loop_weights(cfg, steps: int) -> dict[str, torch.Tensor]:
    """The training loop as it ran before the engine: batches drawn and augmented inline, fp32, one process."""
    images = split_images(cfg.data[0], "train")
    cache = ImageCache(images, cfg.img_size, progress=False)
    writers = torch.tensor([im.writer for im in images])
    genuine = torch.tensor([im.genuine for im in images])
    torch.manual_seed(cfg.seed)
    model = DetailSemNet(
        backbone=cfg.backbone, img_size=cfg.img_size, structural_weight=cfg.structural_weight, drop_path_rate=cfg.drop_path_rate
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    augment = Augment(cfg.augment)
    model.train()
    for step in range(steps):
        rng = np.random.default_rng([cfg.seed, step])
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        idx = sample_batch(images, cfg, rng)
        batch = torch.from_numpy(np.stack([augment(cache[i], rng) for i in idx]))[:, None]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step, cfg.epochs * cfg.steps_per_epoch)
        loss = train_step(model, batch, writers[idx], genuine[idx], cfg)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 5.0)
        optimizer.step()
    return model.state_dict()


@needs_cedar
@pytest.mark.slow
def test_fp32_run_with_workers_equals_the_plain_loop_bit_for_bit(tmp_path: Path) -> None:
    dataset = tiny_cedar(tmp_path)
    cfg = small_config(dataset, tmp_path / "run", epochs=1)
    cfg.img_size, cfg.augment, cfg.precision, cfg.workers = 64, 1.0, "fp32", 2
    run(cfg)
    engine_weights = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    reference = plain_loop_weights(cfg, cfg.steps_per_epoch)
    for name, value in reference.items():
        assert torch.equal(engine_weights[name], value), f"{name} differs from the plain loop"


def test_bf16_step_autocasts_the_backbone_and_keeps_the_loss_close_to_fp32() -> None:
    from test_train import TrainConfig

    torch.manual_seed(0)
    model = DetailSemNet(img_size=64).train()
    images = torch.rand(8, 1, 64, 64) * (torch.rand(8, 1, 64, 64) > 0.8)
    writers = torch.tensor([1, 1, 1, 1, 2, 2, 2, 2])
    genuine = torch.tensor([True, True, True, False] * 2)
    cfg = TrainConfig(data=[], out="")
    seen: list[torch.dtype] = []
    hook = model.match_proj.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(1)
        out = train_step(model, images, writers, genuine, cfg, precision=precision)
        out["loss"].backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        losses[precision] = float(out["loss"].detach())
        model.zero_grad()
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert losses["bf16"] != losses["fp32"] and losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


def test_a_failing_compiler_falls_back_to_eager_with_a_message(capsys: pytest.CaptureFixture) -> None:
    def broken_backend(graph, inputs):  # a compiler that cannot build this graph (no C++ toolchain, unsupported op)
        raise RuntimeError("no C++ compiler on this node")

    torch.manual_seed(0)
    model = DetailSemNet(img_size=64)
    engine.compile_backbone(model, backend=broken_backend)
    images = torch.rand(2, 1, 64, 64)
    embedding, seconds = engine.first_step_compiled(lambda: model.embed(images), model)
    assert seconds == 0.0 and "forward_tokens" not in vars(model.backbone), "the eager backbone must be back"
    printed = capsys.readouterr().out
    assert "compilation failed" in printed and "training eagerly" in printed
    torch.testing.assert_close(embedding.global_feature, model.embed(images).global_feature)


def test_ranks_draw_disjoint_writers_and_one_process_draws_them_all() -> None:
    from test_train import TrainConfig

    from dsn.data.dataset import SignatureImage

    images = [SignatureImage(Path(f"{w}_{g}_{i}.png"), w, g, i) for w in range(20) for g in (True, False) for i in range(4)]
    cfg = TrainConfig(data=[], out="", writers_per_batch=3, genuine_per_writer=2, forged_per_writer=1)
    index = WriterIndex.of(images)
    for step in range(5):
        per_rank = [{images[i].writer for i in sample_batch(index, cfg, np.random.default_rng([0, step]), r, 2)} for r in range(2)]
        assert len(per_rank[0]) == len(per_rank[1]) == 3 and not per_rank[0] & per_rank[1]
    pixels = np.zeros((len(images), 8, 8), np.uint8)
    stream = BatchStream(ImageCache.from_pixels(images, pixels), torch.zeros(len(images)), torch.ones(len(images)), index, cfg, 4, 9)
    assert [b["step"] for b in stream] == [4, 5, 6, 7, 8]
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    assert [b["step"] for b in loader] == [4, 5, 6, 7, 8], "workers must hand batches over in step order"


@needs_cedar
@pytest.mark.slow
def test_two_process_ddp_run_steps_on_different_writers_and_resumes(tmp_path: Path) -> None:
    dataset = tiny_cedar(tmp_path, train_writers=6)
    out = tmp_path / "ddp"
    args = ["--data", str(dataset), "--out", str(out), "--img-size", "48", "--steps-per-epoch", "2", "--writers-per-batch", "2"]
    args += ["--genuine-per-writer", "2", "--forged-per-writer", "1", "--warmup-steps", "1", "--threads", "1", "--workers", "0"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dsn", "train"]
    env = {**os.environ, "DSN_TRACE_BATCHES": str(tmp_path / "trace"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launch, *args, "--epochs", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gloo x2" in done.stdout and done.stdout.count('"best_val_eer"') == 1, "rank 0 alone reports"
    traces = [[json.loads(line) for line in (tmp_path / f"trace.rank{r}.jsonl").read_text().splitlines()] for r in range(2)]
    assert [t["step"] for t in traces[0]] == [t["step"] for t in traces[1]] == [0, 1]
    for mine, theirs in zip(*traces):
        assert mine["writers"] and theirs["writers"] and not set(mine["writers"]) & set(theirs["writers"])
    assert (out / "best" / "model.safetensors").is_file() and (out / "last" / "manifest.json").is_file()
    done = subprocess.run(
        [*launch, *args, "--epochs", "2", "--resume", "--allow-recipe-change"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stdout and json.loads((out / "last" / "train_state.json").read_text())["step"] == 4


def test_train_help_shows_the_engine_options() -> None:
    from dsn.cli import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for option in ("--precision", "--device", "--compile", "--workers", "--packed", "{auto,bf16,fp32}", "{auto,cpu,cuda}"):
        assert option in text


def test_train_takes_every_backbone_a_checkpoint_may_name() -> None:
    from dsn.cli import build_parser
    from dsn.model.config import BACKBONES

    for name in BACKBONES:
        assert build_parser().parse_args(["train", "--data", "d", "--out", "o", "--size", name]).backbone == name


@needs_cedar
def test_pack_round_trips_quantized_pixels_and_refuses_to_exceed_its_limit(tmp_path: Path) -> None:
    dataset = tiny_cedar(tmp_path)
    with pytest.raises(PackError, match="over the limit"):
        pack_datasets([dataset], tmp_path / "small.pack", size=64, max_bytes=1000, progress=False)
    assert not (tmp_path / "small.pack").exists(), "nothing is written over the limit"
    result = pack_datasets([dataset], tmp_path / "data.pack", size=64, levels=16, progress=False, groups={1: 7})
    pack = read_pack(tmp_path / "data.pack")
    train = split_images_of([dataset], "train")
    assert result["train"] == len(train) == len(pack.images["train"]) and result["bytes"] == (tmp_path / "data.pack").stat().st_size
    assert [(im.writer, im.genuine, im.index) for im in pack.images["train"]] == [(im.writer, im.genuine, im.index) for im in train]
    expected = quantize(ImageCache(train, 64, progress=False).pixels, 16)
    assert np.array_equal(pack.pixels["train"], expected) and len(np.unique(expected)) <= 16
    assert pack.groups == {1: 7} and pack.datasets == ["cedar-few"]
    (tmp_path / "junk.pack").write_bytes(b"not a pack")
    with pytest.raises(PackError, match="junk.pack"):
        read_pack(tmp_path / "junk.pack")


@needs_cedar
@pytest.mark.slow
def test_two_steps_from_a_pack_write_a_normal_checkpoint(tmp_path: Path) -> None:
    dataset = tiny_cedar(tmp_path)
    pack = tmp_path / ".gpu" / "data.pack"
    done = subprocess.run(
        [sys.executable, "-m", "dsn", "pack-data", "--data", str(dataset), "--out", str(pack), "--img-size", "64"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "train" in done.stdout and pack.is_file()
    cfg = small_config(dataset, tmp_path / "from-pack", epochs=1)
    cfg.data, cfg.packed, cfg.img_size, cfg.steps_per_epoch = [], str(pack), 64, 2
    state = run(cfg)
    assert state["step"] == 2
    model = DetailSemNet.load(tmp_path / "from-pack" / "best")
    assert model.config.img_size == 64 and "cedar-few" in (tmp_path / "from-pack" / "best" / "README.md").read_text()


def test_the_full_pack_fits_beside_the_repository() -> None:
    """The four datasets' train + val writers at 224 px, 8 grey levels (pack-data's default): the repo plus the pack under 64 MiB."""
    roots = [DATASETS / name for name in ("cedar", "bhsig-bengali", "bhsig-hindi", "crossmedia-chinese")]
    if not all(root.is_dir() for root in roots):
        pytest.skip(f"real datasets not found at {DATASETS}")
    images = split_images_of(roots, "train")[::40]  # a sample: the whole pack takes minutes to build
    cache = ImageCache(images, 224, progress=False)
    import cv2

    per_image = np.mean([len(cv2.imencode(".png", quantize(p, 8), [cv2.IMWRITE_PNG_COMPRESSION, 9])[1]) for p in cache.pixels])
    total_images = len(split_images_of(roots, "train")) + len(split_images_of(roots, "val"))
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    repo_bytes = sum((ROOT / name.decode()).stat().st_size for name in tracked if name and (ROOT / name.decode()).is_file())
    assert repo_bytes + 1.1 * per_image * total_images < 64 * 2**20  # the real pack came out 3 % over the sample's estimate


@needs_cedar
def test_a_time_budget_ends_the_run_with_a_normal_checkpoint(tmp_path: Path) -> None:
    dataset = tiny_cedar(tmp_path)
    cfg = small_config(dataset, tmp_path / "budget", epochs=3)
    cfg.img_size, cfg.steps_per_epoch, cfg.max_minutes, cfg.workers = 48, 20, 1e-4, 1
    state = run(cfg)
    assert state["step"] == 1 and state["epoch"] == 1, "the budget is checked after every step"
    assert (tmp_path / "budget" / "best" / "model.safetensors").is_file() and (tmp_path / "budget" / "last" / "manifest.json").is_file()
