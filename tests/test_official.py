"""Conformance of the official-architecture port with numbers produced by the authors' code, and safe conversion."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import dsn.model  # noqa: F401  (registers the backbones)
from dsn.data.preprocess import preprocess
from dsn.hub.convert_official import ConversionError, convert_official, map_key, official_key, read_official_state_dict
from dsn.model.detailsemnet import DetailSemNet
from dsn.model.dsi import recording_dsi_maps
from dsn.model.matching import cosine_cost

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "official-detailsemnet"
CEDAR = ROOT.parent / "shared" / "datasets" / "cedar"
needs_fixture = pytest.mark.skipif(not (FIXTURE / "expected.safetensors").is_file(), reason=f"{FIXTURE} is absent")
TOLERANCE = 1e-4  # of each tensor's max magnitude


def _formula_state_dict() -> dict[str, torch.Tensor]:
    spec = importlib.util.spec_from_file_location("weights_formula", FIXTURE / "weights_formula.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.formula_state_dict(json.loads((FIXTURE / "keys.json").read_text()))


@pytest.fixture(scope="module")
def official_pt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("official") / "best.pt"
    torch.save(_formula_state_dict(), path)  # the way the official training script saves
    return path


@pytest.fixture(scope="module")
def converted(official_pt, tmp_path_factory) -> tuple[DetailSemNet, Path]:
    out = tmp_path_factory.mktemp("converted") / "official"
    convert_official(official_pt, out)
    return DetailSemNet.load(out), out


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "expected.safetensors"))


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max())


@needs_fixture
@pytest.mark.usefixtures("one_thread")
def test_every_fixture_tensor_is_reproduced(converted, expected):
    model, _ = converted
    images = expected["input_pair"].transpose(0, 1)  # (1, 2, H, W) -> (2, 1, H, W)
    stages: dict[int, torch.Tensor] = {}
    hooks = [s.register_forward_hook(lambda m, i, o, k=k: stages.__setitem__(k, o)) for k, s in enumerate(model.backbone.stages)]
    with torch.inference_mode(), recording_dsi_maps(model.backbone) as maps:
        embedding = model.embed(images)
        _, normed, _ = model.backbone.forward_tokens(images)
    for hook in hooks:
        hook.remove()
    errors = {}
    for i in range(2):
        p = f"image{i}."
        for s in range(4):
            errors[p + f"stage{s + 1}"] = _close(stages[s][i : i + 1], expected[p + f"stage{s + 1}"])
            last = [m for m in maps if m.stage == s][-1]
            high = torch.cat([last.detail_conv, last.salient_conv], dim=1)[i : i + 1]
            errors[p + f"stage{s + 1}_last_high"] = _close(high, expected[p + f"stage{s + 1}_last_high"])
            errors[p + f"stage{s + 1}_last_low"] = _close(last.semantics_attend[i : i + 1], expected[p + f"stage{s + 1}_last_low"])
        errors[p + "final_tokens_normed"] = _close(normed[i : i + 1], expected[p + "final_tokens_normed"])
        errors[p + "global_feature"] = _close(embedding.global_feature[i : i + 1], expected[p + "global_feature"])
        assert torch.equal(embedding.ink_mask[i : i + 1], expected[p + "ink_mask"].bool()), p + "ink_mask"
        ink_tokens = embedding.tokens[i][embedding.ink_mask[i]][None]
        errors[p + "structural_tokens"] = _close(ink_tokens, expected[p + "structural_tokens"])
    ref_tokens = embedding.tokens[0][embedding.ink_mask[0]][None]
    query_tokens = embedding.tokens[1][embedding.ink_mask[1]][None]
    errors["cost_query_by_reference"] = _close(cosine_cost(ref_tokens, query_tokens).transpose(1, 2), expected["cost_query_by_reference"])
    global_distance = (embedding.global_feature[0] - embedding.global_feature[1]).norm()[None]
    errors["global_distance"] = _close(global_distance, expected["global_distance"])
    with safe_open(str(FIXTURE / "expected.safetensors"), "pt") as f:
        compared = {k for k in f.keys() if k not in {"input_pair", "official_forward_distance"} and not k.endswith("ink_mask")}
    assert compared == set(errors), compared ^ set(errors)
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, (worst, errors[worst])


@needs_fixture
def test_formula_checkpoint_converts_with_every_key(official_pt, converted):
    model, folder = converted
    official = read_official_state_dict(official_pt)
    assert len(official) == len(model.state_dict()) == 445
    config = json.loads((folder / "config.json").read_text())
    assert config["backbone"] == "dsnet_official" and config["preprocessing"] == "stretch" and config["global_distance"] == "l2"
    assert "sha256" in (folder / "README.md").read_text()


@needs_fixture
def test_wrapped_and_dataparallel_checkpoints_convert(tmp_path):
    state = _formula_state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "wrapped.pt")
    model = convert_official(tmp_path / "wrapped.pt", tmp_path / "out")
    assert torch.equal(model.match_proj.weight, state["head_str.weight"])


@needs_fixture
@pytest.mark.skipif(not (CEDAR / "011").is_dir(), reason=f"{CEDAR} is absent")
@pytest.mark.usefixtures("one_thread")
def test_official_preprocessing_from_the_files_gives_the_official_distance(converted, expected):
    model, _ = converted
    with safe_open(str(FIXTURE / "expected.safetensors"), "pt") as f:
        files = json.loads(f.metadata()["images"])
    images = [preprocess(CEDAR / name, mode=model.config.preprocessing) for name in files]
    pixels = torch.cat([im.tensor() for im in images])
    # Our stretch is the same PIL resize as torchvision's Resize on a PIL image: identical pixels.
    assert float((pixels[:, 0] - expected["input_pair"][0]).abs().max()) < 1e-6
    with torch.inference_mode():
        result = model(images[0].tensor(), images[1].tensor())
    official = float(expected["global_distance"][0])
    assert abs(float(result.global_distance[0]) - official) <= 0.01 * official
    assert float(result.transport.marginal_error[0]) < 1e-3  # a converged coupling, unlike the official eval Sinkhorn


@needs_fixture
def test_cli_convert_then_verify_prints_the_official_global_distance(official_pt, expected, tmp_path):
    if not (CEDAR / "011").is_dir():
        pytest.skip(f"{CEDAR} is absent")
    out = tmp_path / "out"
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "dsn"]
    subprocess.run([*run, "convert-official", str(official_pt), str(out)], check=True, env=env, capture_output=True, cwd=tmp_path)
    shown = subprocess.run(
        [*run, "verify", "--weights", str(out), str(CEDAR / "011/genuine/01.png"), str(CEDAR / "011/forged/01.png"), "--json"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    result = json.loads(shown.stdout)
    assert result["global_distance"] == pytest.approx(float(expected["global_distance"][0]), rel=1e-4)


# ---------------------------------------------------------------------------- refusals (no fixture needed)


def _official_layout_state() -> dict[str, torch.Tensor]:
    """A complete official-layout state dict, built from our own model through the inverse key mapping."""
    return {official_key(k): v.clone() for k, v in DetailSemNet(backbone="dsnet_official").state_dict().items()}


@pytest.fixture(scope="module")
def good_state() -> dict[str, torch.Tensor]:
    return _official_layout_state()


def test_the_mapping_covers_every_parameter_exactly_once(good_state):
    model_keys = set(DetailSemNet(backbone="dsnet_official").state_dict())
    assert {map_key(k) for k in good_state} == model_keys and len(good_state) == len(model_keys) == 445


@needs_fixture
def test_the_inverse_mapping_names_exactly_the_official_keys():
    official = {key for key, _, _ in json.loads((FIXTURE / "keys.json").read_text())}
    assert set(_official_layout_state()) == official


@pytest.mark.parametrize("damage", ["missing", "extra", "shape"])
def test_damaged_checkpoints_are_refused_with_a_clear_message(good_state, tmp_path, damage):
    state = dict(good_state)
    if damage == "missing":
        del state["model.blocks3.4.attn.low_mixer.qkv.weight"]
        expected = "1 missing (e.g. model.blocks3.4.attn.low_mixer.qkv.weight)"
    elif damage == "extra":
        state["model.head.weight"] = torch.zeros(10, 384)
        expected = "1 unexpected (e.g. model.head.weight)"
    else:
        state["head_str.weight"] = torch.zeros(64, 384)
        expected = "head_str.weight: (64, 384), expected (96, 384)"
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ConversionError, match="Not a checkpoint of the official DetailSemNet") as err:
        convert_official(tmp_path / "bad.pt", tmp_path / "out")
    assert expected in str(err.value)
    assert not (tmp_path / "out").exists()


class _RunsCode:
    """Unpickling this would call ``Path.touch`` on a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(good_state, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({**good_state, "head_str.bias": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ConversionError, match="other than tensors"):
        convert_official(tmp_path / "evil.pt", tmp_path / "out")
    assert not marker.exists()


def test_entries_that_are_not_tensors_and_non_checkpoints_are_refused(good_state, tmp_path):
    torch.save({**good_state, "epoch": 7}, tmp_path / "mixed.pt")
    with pytest.raises(ConversionError, match="must be a tensor.*epoch"):
        read_official_state_dict(tmp_path / "mixed.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ConversionError, match="not a readable PyTorch checkpoint"):
        read_official_state_dict(tmp_path / "text.pt")
    with pytest.raises(ConversionError, match="is not a file"):
        read_official_state_dict(tmp_path)


def test_official_backbones_are_registered_and_take_other_sizes():
    for name, width in (("dsnet_official", 384), ("dsnet_official_small", 320), ("dsnet_official_tiny", 160)):
        assert timm.create_model(name).num_features == width
    model = DetailSemNet(backbone="dsnet_official_tiny", img_size=128, preprocessing="stretch", ink_mask="area_mean").eval()
    with torch.inference_mode():
        square = model.embed(torch.rand(2, 1, 128, 128))
        wide = model.embed(torch.rand(1, 1, 128, 448))  # odd grids on the way: ceil pooling keeps it defined
    assert square.grid == (4, 4) and wide.grid == (4, 14)


def test_config_refuses_unknown_distance_definitions():
    with pytest.raises(ValueError, match="global_distance must be one of"):
        DetailSemNet(global_distance="cosine")


# ---------------------------------------------------------------------------- every view with an official checkpoint

EXAMPLES = ROOT / "assets" / "examples"


@pytest.fixture(scope="module")
def official_folder(tmp_path_factory) -> Path:
    """A checkpoint folder with the official architecture, preprocessing and distance (seeded random weights)."""
    from dsn.model.detailsemnet import DetailSemNetConfig

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("official-random") / "ckpt"
    DetailSemNet(**vars(DetailSemNetConfig.official(backbone="dsnet_official_tiny"))).save(folder)
    return folder


@pytest.mark.usefixtures("one_thread")
def test_every_view_runs_on_an_official_checkpoint(official_folder):
    from dsn.inference import analyze_pair, verify
    from dsn.inspect import figures
    from dsn.inspect.attribution import attribute
    from dsn.inspect.reference_set import verify_against_references
    from dsn.ui.tabs.detail import stage_choices

    model = DetailSemNet.load(official_folder)
    ref, query = EXAMPLES / "writer1_reference.png", EXAMPLES / "writer1_forged.png"
    analysis = analyze_pair(model, ref, query)
    assert analysis.reference.image.shape == (224, 224)
    # stretched: the whole original maps onto the square, so its corners land on the canvas corners
    height, width = analysis.reference.original.shape[:2]
    corners = analysis.reference.to_original(np.array([[0.0, 0.0], [224.0, 224.0]]))
    assert corners.tolist() == [[0.0, 0.0], [float(width), float(height)]]
    assert verify(model, ref, query)["distance"] == pytest.approx(float(analysis.verification.distance[0]), abs=1e-5)
    for make in (figures.correspondence_figure, figures.plan_heatmap, figures.structural_share_figure, figures.distance_bar_figure):
        make(analysis)
    assert {m.pool_size for m in analysis.maps_ref} == {1, 2}
    assert [label for label, _ in stage_choices(model.backbone.pool_sizes)][2:] == ["stage 3 (no pooling)", "stage 4 (no pooling)"]
    for stage in range(4):
        figures.dsi_figure(analysis, stage, 0)
    for method in ("saliency", "layer_gradcam", "integrated_gradients"):
        result = attribute(model, analysis, method, steps=4)
        assert result.map.shape == (224, 224) and float(abs(result.map).max()) > 0
    references = verify_against_references(model, query, [ref, EXAMPLES / "writer1_genuine.png"])
    assert len(references.distances) == 2


def test_official_and_letterbox_inputs_never_share_cache_entries(official_folder, tmp_path):
    from dsn.data.dataset import list_images
    from dsn.evaluation.embedding_cache import EmbeddingCache, input_key

    ours = DetailSemNet(backbone="dsnet_official_tiny")
    ours.load_state_dict(DetailSemNet.load(official_folder).state_dict())  # same weights, our preprocessing
    official = DetailSemNet.load(official_folder)
    assert input_key(ours) != input_key(official)
    root = tmp_path / "data" / "001"
    (root / "genuine").mkdir(parents=True)
    for i, name in enumerate(["writer1_reference.png", "writer1_genuine.png"]):
        (root / "genuine" / f"{i + 1:02d}.png").write_bytes((EXAMPLES / name).read_bytes())
    images = list_images(tmp_path / "data")
    cache = EmbeddingCache(tmp_path / "cache")
    first = cache.embed(official, images)
    assert cache.last.misses == 2
    cache.embed(ours, images)
    assert cache.last.misses == 2  # not served the stretched rows
    again = cache.embed(official, images)
    assert cache.last.hits == 2 and torch.equal(again.global_feature, first.global_feature)


@pytest.mark.slow
def test_the_app_serves_an_official_checkpoint(official_folder):
    gradio_client = pytest.importorskip("gradio_client")
    from dsn.tools.screenshot import serve

    with serve(str(official_folder)) as (_, url):
        client = gradio_client.Client(url, verbose=False)
        ref, query = (gradio_client.handle_file(str(EXAMPLES / n)) for n in ("writer1_reference.png", "writer1_forged.png"))
        summary = client.predict(ref, query, None, api_name="/verify")
        assert summary["distance"] == pytest.approx(summary["global_distance"] + summary["weighted_structural_distance"], abs=1e-5)
        assert client.predict(ref, query, 5, -1, api_name="/correspondences")["matches"]
        assert client.predict(ref, query, 2, 0, api_name="/dsi")["pool_size"] == 1
        assert client.predict(ref, query, "layer_gradcam", "total", "query", 8, api_name="/attribute")["stats"]


def test_a_text_file_named_pt_gets_a_message_not_a_traceback(tmp_path: Path) -> None:
    fake = tmp_path / "best.pt"
    fake.write_text("hello world\n")
    with pytest.raises(ConversionError, match=r"best\.pt is not a readable PyTorch checkpoint"):
        read_official_state_dict(fake)
