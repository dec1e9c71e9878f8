"""DetailSemNet: embed/compare consistency, batching, and safe weight loading."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsn.model.detailsemnet import DetailSemNet, Embedding, Verification
from dsn.model.weights import CHECKSUM_NAME, CONFIG_NAME, SHA256_KEY, WEIGHTS_NAME, WeightsError

SIZE = 64  # a 2x2 final grid: every code path, a fraction of the compute


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> DetailSemNet:
    torch.manual_seed(0)
    return DetailSemNet(match_dim=24).eval()


def strokes(batch: int, seed: int) -> torch.Tensor:
    """Ink-bright images with sparse bright pixels, so ink masks differ between images."""
    generator = torch.Generator().manual_seed(seed)
    ink = torch.rand(batch, 1, SIZE, SIZE, generator=generator) < torch.linspace(0.02, 0.3, batch)[:, None, None, None]
    return ink.float() * torch.rand(batch, 1, SIZE, SIZE, generator=generator)


def test_embed_then_compare_equals_forward(model: DetailSemNet) -> None:
    ref, query = strokes(3, 1), strokes(3, 2)
    with torch.inference_mode():
        direct = model(ref, query)
        separate = model.compare(model.embed(ref), model.embed(query))
    for name in ("distance", "global_distance", "structural_distance"):
        assert torch.allclose(getattr(direct, name), getattr(separate, name), atol=1e-5), name
    assert torch.allclose(direct.plan, separate.plan, atol=1e-5)


def test_batch_of_pairs_equals_each_pair_alone(model: DetailSemNet) -> None:
    ref, query = strokes(4, 3), strokes(4, 4)
    with torch.inference_mode():
        batched = model(ref, query)
        alone = [model(ref[i : i + 1], query[i : i + 1]) for i in range(4)]
    assert len({int(m.sum()) for m in batched.mask_ref}) > 1, "pairs must differ in ink token counts"
    for i, single in enumerate(alone):
        assert batched.distance[i].item() == pytest.approx(single.distance.item(), abs=1e-5)
        assert torch.allclose(batched.plan[i], single.plan[0], atol=1e-5)


def test_verification_fields(model: DetailSemNet) -> None:
    with torch.inference_mode():
        result = model(strokes(2, 5), strokes(2, 6))
    assert isinstance(result, Verification)
    n = 4  # 2x2 tokens at 64 px
    assert result.grid == (2, 2)
    for name in ("distance", "global_distance", "structural_distance"):
        assert getattr(result, name).shape == (2,)
    assert result.plan.shape == result.transport.cost.shape == (2, n, n)
    assert result.mask_ref.shape == result.mask_query.shape == (2, n) and result.mask_ref.dtype == torch.bool
    assert result.structural_weight == model.config.structural_weight
    expected = result.global_distance + result.structural_weight * result.structural_distance
    assert torch.allclose(result.distance, expected)
    assert result.is_genuine(float(result.distance.max())).all()


def test_embedding_indexing_and_cat(model: DetailSemNet) -> None:
    with torch.inference_mode():
        emb = model.embed(strokes(3, 7))
    assert len(emb) == 3
    last = emb[-1]
    assert len(last) == 1 and torch.equal(last.tokens, emb.tokens[2:])
    assert torch.equal(emb[1].global_feature, emb.global_feature[1:2])
    joined = Embedding.cat([emb[0], emb[1:]])
    assert torch.equal(joined.tokens, emb.tokens) and torch.equal(joined.ink_mask, emb.ink_mask)


def test_save_load_round_trip_gives_identical_outputs(model: DetailSemNet, tmp_path: Path) -> None:
    model.config.threshold = 0.4321  # set after training, must survive the round trip
    try:
        folder = model.save(tmp_path / "ckpt")
    finally:
        model.config.threshold = 0.6
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME, CHECKSUM_NAME]
    loaded = DetailSemNet.load(folder)
    assert not loaded.training
    assert loaded.config.threshold == 0.4321 and loaded.config.match_dim == 24
    ref, query = strokes(2, 8), strokes(2, 9)
    with torch.inference_mode():
        before, after = model(ref, query), loaded(ref, query)
    assert torch.equal(before.distance, after.distance)
    assert torch.equal(before.plan, after.plan)


# ----------------------------------------------------------------------------- refused weights


@pytest.fixture(scope="module")
def saved(model: DetailSemNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model.save(tmp_path_factory.mktemp("weights") / "tiny")


def _copy(saved: Path, target: Path) -> Path:
    target.mkdir()
    # no checksum, as in checkpoints older than checksums: each test breaks the weights in its own way
    (target / WEIGHTS_NAME).write_bytes((saved / WEIGHTS_NAME).read_bytes())
    config = json.loads((saved / CONFIG_NAME).read_text())
    config.pop(SHA256_KEY)
    (target / CONFIG_NAME).write_text(json.dumps(config))
    return target


def test_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        DetailSemNet.load(tmp_path / "nowhere")


def test_pickle_checkpoint_is_refused_not_unpickled(tmp_path: Path) -> None:
    class Bomb:
        def __reduce__(self):
            return (Path(tmp_path / "EXPLODED").touch, ())

    torch.save({"boom": Bomb()}, tmp_path / "model.pt")
    with pytest.raises(WeightsError, match=r"pickle.*refused"):
        DetailSemNet.load(tmp_path)
    assert not (tmp_path / "EXPLODED").exists()


def test_config_of_another_architecture_is_refused(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path / "small")
    config = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**config, "backbone": "dsnet_small"}))
    with pytest.raises(WeightsError, match="do not fit the architecture|wrong architecture"):
        DetailSemNet.load(folder)


def test_changed_width_is_refused_with_the_tensor_named(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path / "wide")
    config = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**config, "match_dim": 32}))
    with pytest.raises(WeightsError, match=r"shapes differ for 2 keys, e\.g\. match_proj\.(weight|bias): \(24,?"):
        DetailSemNet.load(folder)


@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_missing_or_unexpected_keys_are_refused(saved: Path, tmp_path: Path, change: str) -> None:
    folder = _copy(saved, tmp_path / change)
    state = load_file(str(folder / WEIGHTS_NAME))
    if change == "missing":
        del state["match_proj.bias"]
    else:
        state["extra.weight"] = torch.zeros(3)
    save_file(state, str(folder / WEIGHTS_NAME))
    with pytest.raises(WeightsError, match=f"{change} [1-9]"):
        DetailSemNet.load(folder)


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"backbone": "dsnet_huge"}', "backbone must be one of this project's"),
        ('{"lambda": 2}', "does not know"),
        ('{"img_size": 60000}', "img_size must be between 32 and 1024"),
        ('{"img_size": "224"}', "img_size must be an integer"),
        ('{"threshold": NaN}', "threshold must be finite"),
        ('{"sinkhorn_iterations": 1e9}', "sinkhorn_iterations must be an integer"),
        ('{"preprocessing": 3}', "preprocessing must be a string"),
        ('{"reference_thresholds": [0.3]}', "reference_thresholds must be an object"),
        ('{"reference_thresholds": {"median": {"3": 0.3}}}', "rule must be one of"),
        ('{"reference_thresholds": {"min": {"1": 0.3}}}', "K must be a number 2-32"),
        ('{"reference_thresholds": {"min": {"3": NaN}}}', "must be a threshold between"),
        ('{"reference_thresholds": {"min": {"3": true}}}', "must be a threshold between"),
        ('{"reference_rule": "max"}', "reference_rule must be one of"),
    ],
)
def test_bad_config_is_refused(saved: Path, tmp_path: Path, config_text: str, message: str) -> None:
    folder = _copy(saved, tmp_path / "bad")
    (folder / CONFIG_NAME).write_text(config_text)
    with pytest.raises(WeightsError, match=message):
        DetailSemNet.load(folder)


def test_missing_config_and_corrupt_weights_are_refused(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path / "noconfig")
    (folder / CONFIG_NAME).unlink()
    with pytest.raises(WeightsError, match=CONFIG_NAME):
        DetailSemNet.load(folder)

    folder = _copy(saved, tmp_path / "truncated")
    (folder / CHECKSUM_NAME).write_bytes((saved / CHECKSUM_NAME).read_bytes())
    data = (folder / WEIGHTS_NAME).read_bytes()
    (folder / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="does not match the sha256"):
        DetailSemNet.load(folder)
    (folder / CHECKSUM_NAME).unlink()  # an older checkpoint without a checksum: safetensors itself notices
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        DetailSemNet.load(folder)


def test_flipped_bytes_in_the_weights_are_refused(saved: Path, tmp_path: Path) -> None:
    """Bytes changed inside tensor data still parse as safetensors; only the recorded sha256 catches them."""
    folder = _copy(saved, tmp_path / "flipped")
    (folder / CHECKSUM_NAME).write_bytes((saved / CHECKSUM_NAME).read_bytes())
    recorded = (folder / CHECKSUM_NAME).read_text().split()[0]
    assert recorded == hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest(), "save records the file's sha256"
    data = bytearray((folder / WEIGHTS_NAME).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4000] = bytes(b ^ 0xFF for b in data[middle : middle + 4000])
    (folder / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupted or was changed"):
        DetailSemNet.load(folder)
    (folder / CHECKSUM_NAME).unlink()
    with pytest.warns(UserWarning, match="no checksum recorded"):
        DetailSemNet.load(folder)  # without any checksum the same bytes load, and the warning says so

    # a checkpoint saved now records the sha256 in config.json too: deleting the sidecar skips nothing
    signed = tmp_path / "signed"
    signed.mkdir()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        (signed / name).write_bytes((saved / name).read_bytes())
    assert json.loads((signed / CONFIG_NAME).read_text())[SHA256_KEY] == recorded
    (signed / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="recorded in config.json"):
        DetailSemNet.load(signed)


def test_configs_naming_other_backbones_are_refused_before_anything_is_built(saved: Path, tmp_path: Path) -> None:
    for backbone in ("vit_huge_patch14_224", "hf-hub:someone/evil-model"):
        folder = _copy(saved, tmp_path / backbone.replace(":", "_").replace("/", "_"))
        config = json.loads((folder / CONFIG_NAME).read_text())
        (folder / CONFIG_NAME).write_text(json.dumps({**config, "backbone": backbone}))
        with pytest.raises(WeightsError, match="backbone must be one of this project's"):
            DetailSemNet.load(folder)


def test_nan_weights_and_absurdly_nested_configs_are_refused(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path / "nan")
    state = load_file(str(folder / WEIGHTS_NAME))
    state["match_proj.weight"][0, 0] = float("nan")
    save_file(state, str(folder / WEIGHTS_NAME))
    with pytest.raises(WeightsError, match="NaN or infinite"):
        DetailSemNet.load(folder)
    folder = _copy(saved, tmp_path / "nested")
    (folder / CONFIG_NAME).write_text("[" * 100_000)
    with pytest.raises(WeightsError, match="nested too deeply"):
        DetailSemNet.load(folder)


def test_results_move_and_split_themselves_with_every_field() -> None:
    """``map_tensors`` reaches every tensor of a result, nested transport included, and keeps the plain fields."""
    from dsn.model.tensors import map_tensors

    torch.manual_seed(0)
    model = DetailSemNet().eval()
    with torch.no_grad():
        both = model.embed(torch.rand(4, 1, 224, 224))
        v = model.compare(both[:2], both[2:])
    second = v[1]
    assert second.grid == v.grid and second.structural_weight == v.structural_weight
    assert torch.equal(second.distance, v.distance[1:2]) and torch.equal(second.transport.plan, v.transport.plan[1:2])
    assert torch.equal(v[-1].mask_query, v.mask_query[-1:])
    halves = map_tensors(v, lambda t: t.half() if t.is_floating_point() else t)
    assert halves.transport.cost.dtype == torch.float16 and halves.mask_ref.dtype == torch.bool
    assert v.cpu().transport.cost.dtype == torch.float32
    moved = both.to("cpu", torch.float64)
    assert moved.tokens.dtype == torch.float64 and moved.ink_mask.dtype == torch.bool and moved.grid == both.grid
