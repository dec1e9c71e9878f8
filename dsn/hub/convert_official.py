"""Convert a checkpoint trained with the authors' DetailSemNet code into a checkpoint folder of ours.

The official training script saves ``torch.save(model.state_dict())`` of
``ViT_for_OSV_DSNet``: the backbone under ``model.``, the structural head as
``head_str``. It is a pickle, so it is read with ``torch.load(weights_only=True)``
(which refuses any object but tensors and plain containers) and every value
must be a tensor. Key mapping (official -> ours):

====================================  ==========================================
``model.patch_embed.proj1|norm1``     ``backbone.stem.conv1|bn1``
``model.patch_embed.proj2|norm2``     ``backbone.stem.conv2|bn2``
``model.patch_embed{s}.proj|norm``    ``backbone.stages.{s-1}.downsample.conv|bn``
``model.pos_embed{s}``                ``backbone.stages.{s-1}.pos_embed``
``model.blocks{s}.{i}.``              ``backbone.stages.{s-1}.blocks.{i}.``
  ``attn.reduce_h|reduce_l``            ``mixer.reduce_detail|reduce_semantic``
  ``attn.high_mixer.conv1|proj1``       ``mixer.detail_conv.0|1`` (DetailConv)
  ``attn.high_mixer.proj2``             ``mixer.salient_conv.1`` (SalientConv)
  ``attn.low_mixer.qkv``                ``mixer.semantics_attend.qkv``
  ``attn.conv_fuse|proj``               ``mixer.fuse|proj``
  ``layer_scale_1|2``                   ``ls1|ls2.gamma``
  ``norm1|norm2|mlp.*``                 unchanged
``model.norm``                        ``backbone.norm``
``head_str``                          ``match_proj``
====================================  ==========================================

A ``module.`` prefix (``DataParallel``) is removed first.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import zipfile
from pathlib import Path

import torch

from dsn.model.detailsemnet import DetailSemNet, DetailSemNetConfig
from dsn.model.weights import CONFIG_NAME, WEIGHTS_NAME

_BLOCK_PARTS = (
    ("attn.reduce_h.", "mixer.reduce_detail."),
    ("attn.reduce_l.", "mixer.reduce_semantic."),
    ("attn.high_mixer.conv1.", "mixer.detail_conv.0."),
    ("attn.high_mixer.proj1.", "mixer.detail_conv.1."),
    ("attn.high_mixer.proj2.", "mixer.salient_conv.1."),
    ("attn.low_mixer.qkv.", "mixer.semantics_attend.qkv."),
    ("attn.conv_fuse.", "mixer.fuse."),
    ("attn.proj.", "mixer.proj."),
    ("layer_scale_1", "ls1.gamma"),
    ("layer_scale_2", "ls2.gamma"),
    ("norm1.", "norm1."),
    ("norm2.", "norm2."),
    ("mlp.fc1.", "mlp.fc1."),
    ("mlp.fc2.", "mlp.fc2."),
)
_STEM = {"proj1.": "conv1.", "norm1.": "bn1.", "proj2.": "conv2.", "norm2.": "bn2."}
_STEM_BACK = {v[:-1]: k[:-1] for k, v in _STEM.items()}


class ConversionError(ValueError):
    """The file is not an official DetailSemNet checkpoint we can convert; the message says why."""


def map_key(key: str) -> str | None:
    """Our name for an official key, or None when the key has no place in our model."""
    if match := re.fullmatch(r"model\.patch_embed\.(proj1\.|norm1\.|proj2\.|norm2\.)(.+)", key):
        return f"backbone.stem.{_STEM[match[1]]}{match[2]}"
    if match := re.fullmatch(r"model\.patch_embed([2-4])\.(proj|norm)\.(.+)", key):
        return f"backbone.stages.{int(match[1]) - 1}.downsample.{'conv' if match[2] == 'proj' else 'bn'}.{match[3]}"
    if match := re.fullmatch(r"model\.pos_embed([1-4])", key):
        return f"backbone.stages.{int(match[1]) - 1}.pos_embed"
    if match := re.fullmatch(r"model\.blocks([1-4])\.(\d+)\.(.+)", key):
        for old, new in _BLOCK_PARTS:
            if match[3].startswith(old):
                return f"backbone.stages.{int(match[1]) - 1}.blocks.{match[2]}.{new}{match[3][len(old) :]}"
        return None
    if match := re.fullmatch(r"model\.norm\.(weight|bias)", key):
        return f"backbone.norm.{match[1]}"
    if match := re.fullmatch(r"head_str\.(weight|bias)", key):
        return f"match_proj.{match[1]}"
    return None


def official_key(ours: str) -> str | None:
    """The official name of one of our keys (the inverse of ``map_key``), or None for keys it has no place for."""
    if match := re.fullmatch(r"backbone\.stem\.(conv1|bn1|conv2|bn2)\.(.+)", ours):
        return f"model.patch_embed.{_STEM_BACK[match[1]]}.{match[2]}"
    if match := re.fullmatch(r"backbone\.stages\.([1-3])\.downsample\.(conv|bn)\.(.+)", ours):
        return f"model.patch_embed{int(match[1]) + 1}.{'proj' if match[2] == 'conv' else 'norm'}.{match[3]}"
    if match := re.fullmatch(r"backbone\.stages\.([0-3])\.pos_embed", ours):
        return f"model.pos_embed{int(match[1]) + 1}"
    if match := re.fullmatch(r"backbone\.stages\.([0-3])\.blocks\.(\d+)\.(.+)", ours):
        for old, new in _BLOCK_PARTS:
            if match[3].startswith(new):
                return f"model.blocks{int(match[1]) + 1}.{match[2]}.{old}{match[3][len(new) :]}"
        return None
    if match := re.fullmatch(r"backbone\.norm\.(weight|bias)", ours):
        return f"model.norm.{match[1]}"
    if match := re.fullmatch(r"match_proj\.(weight|bias)", ours):
        return f"head_str.{match[1]}"
    return None


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of an official checkpoint, loaded without running any code from the file."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} is not a file.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        with path.open("rb") as stream:
            is_pickle = zipfile.is_zipfile(stream) or (stream.seek(0) == 0 and stream.read(1) == b"\x80")
        if not is_pickle:
            raise ConversionError(f"{path.name} is not a readable PyTorch checkpoint (not a torch.save file).") from err
        raise ConversionError(
            f"{path.name} holds objects other than tensors, so it was not unpickled and nothing in it ran. "
            "Only a state dict of tensors (torch.save(model.state_dict())) is accepted."
        ) from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise ConversionError(f"{path.name} is not a readable PyTorch checkpoint ({type(err).__name__}: {err}).") from err
    except (KeyError, IndexError, TypeError, AttributeError, UnicodeDecodeError) as err:  # text or garbage read as a pickle
        raise ConversionError(f"{path.name} is not a readable PyTorch checkpoint (not a torch.save file).") from err
    if isinstance(data, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(data.get(wrapper), dict):
                data = data[wrapper]
                break
    if not isinstance(data, dict) or not data:
        raise ConversionError(f"{path.name} does not hold a state dict (a non-empty mapping of names to tensors).")
    not_tensors = sorted(str(k) for k, v in data.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ConversionError(f"{path.name}: every entry of a state dict must be a tensor; these are not: {not_tensors[:5]}")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in data.items()}


def convert_state_dict(official: dict[str, torch.Tensor], model: DetailSemNet) -> dict[str, torch.Tensor]:
    """Official tensors under our names; refuses unknown, missing and mis-shaped keys with one clear message."""
    expected = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in official.items():
        ours = map_key(key)
        if ours is None or ours not in expected:
            unexpected.append(key)
        else:
            mapped[ours] = tensor
    inverse = {map_key(k): k for k in official}
    missing = sorted(k for k in expected if k not in mapped)
    wrong = [
        f"{inverse[k]}: {tuple(v.shape)}, expected {tuple(expected[k].shape)}" for k, v in mapped.items() if v.shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {official_key(missing[0]) or missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[0]})")
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape (e.g. {wrong[0]})")
    if problems:
        raise ConversionError(f"Not a checkpoint of the official DetailSemNet ({model.config.backbone}): keys " + "; ".join(problems) + ".")
    return {k: v.to(expected[k].dtype) for k, v in mapped.items()}


def convert_official(
    checkpoint: str | Path, out_dir: str | Path, threshold: float | None = None, structural_weight: float = 1.0
) -> DetailSemNet:
    """Read an official checkpoint, map it onto ``dsnet_official`` and write a checkpoint folder.

    ``threshold`` is the decision threshold on the total distance; without it
    the midpoint of the training margins (0.6) is used and the card says it
    was not chosen on data (run ``python -m dsn calibrate``).
    """
    checkpoint = Path(checkpoint)
    state = read_official_state_dict(checkpoint)
    if threshold is not None and not (threshold == threshold and 0 < threshold < float("inf")):
        raise ConversionError(f"--threshold must be a positive finite number, got {threshold}")
    config = DetailSemNetConfig.official(threshold=0.6 if threshold is None else float(threshold), structural_weight=structural_weight)
    model = DetailSemNet(**vars(config))
    model.load_state_dict(convert_state_dict(state, model), strict=True)
    out = model.save(out_dir)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    (out / "README.md").write_text(_model_card(checkpoint.name, digest, config, threshold is not None))
    provenance = {"source_file": checkpoint.name, "source_sha256": digest, "converted_by": "python -m dsn convert-official"}
    (out / "conversion.json").write_text(json.dumps(provenance, indent=2) + "\n")
    model.source = str(out)
    return model.eval()


def _model_card(name: str, digest: str, config: DetailSemNetConfig, threshold_given: bool) -> str:
    threshold = (
        f"{config.threshold:g}, given at conversion (`--threshold`)."
        if threshold_given
        else f"{config.threshold:g}: the midpoint of the training margins (0.3 / 0.9), **not chosen on data**. "
        "Set it on validation writers with `python -m dsn calibrate --weights THIS_FOLDER --data DATASET`."
    )
    return f"""---
library_name: dsn
tags: [signature-verification, detailsemnet, optimal-transport]
---

# DetailSemNet converted from an official checkpoint

Weights trained with the authors' code (github `nycu-acm/DetailSemNet_OSV`), converted by
`python -m dsn convert-official {name} OUT_DIR`.

- Source file: `{name}`, sha256 `{digest}`.
- Architecture: `{config.backbone}` (the paper's network; DetailSemNet, Shih et al., ECCV 2024,
  https://arxiv.org/abs/2511.16364), structural head 384 -> {config.match_dim}.
- Preprocessing: the official one (`{config.preprocessing}`): grey, inverted, the whole image resized to
  {config.img_size}x{config.img_size}, no crop, aspect not kept.
- Distance: plain L2 between the mean final normed tokens + {config.structural_weight:g} x optimal-transport cost
  of the pre-norm ink tokens (cosine cost, epsilon {config.epsilon_eval:g}, {config.sinkhorn_iterations} Sinkhorn
  iterations: a converged coupling, unlike the official evaluation's epsilon 5e-8).
- Threshold: {threshold}

No metrics were measured at conversion; evaluate with `python -m dsn evaluate --weights THIS_FOLDER --data DATASET`.
Files: `{CONFIG_NAME}`, `{WEIGHTS_NAME}` (safetensors), `conversion.json`.
"""
