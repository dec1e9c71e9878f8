"""What a checkpoint's ``config.json`` holds, checked field by field when it is read.

A checkpoint may come from the internet, so its config is untrusted input: a wrong type,
a non-finite threshold or an absurd input size is refused with a message that names the
field, before any tensor is allocated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

PREPROCESSING_MODES = ("letterbox", "stretch", "strokes")
# How K genuine references are combined into one distance (see dsn.inspect.reference_set).
REFERENCE_RULES = ("mean", "min")
# The only backbones a config may name: this project's own (registered with timm by dsn.model).
# Anything else (a huge timm model, an "hf-hub:" address that timm would download) is refused
# before a single tensor is allocated.
BACKBONES = ("dsnet_tiny", "dsnet_small", "dsnet_base", "dsnet_official_tiny", "dsnet_official_small", "dsnet_official")

# How the distance is defined: ours, and the official code's (plain L2 of the mean normed
# token, structural tokens projected from the *pre-norm* tokens, ink by area mean).
CHOICES = {
    "preprocessing": PREPROCESSING_MODES,
    "global_distance": ("normalized_l2", "l2"),
    "structural_tokens": ("normed", "pre_norm"),
    "ink_mask": ("stroke_fraction", "area_mean"),
    "reference_rule": REFERENCE_RULES,
}
MAX_CALIBRATED_REFERENCES = 32
# Inclusive ranges of the numeric fields: wide enough for any sensible checkpoint.
RANGES = {
    "img_size": (32, 1024),  # 1024 px is ~20x the default's activations; beyond is a mistake or an attack
    "match_dim": (1, 4096),
    "structural_weight": (0.0, 1e3),
    "epsilon_train": (1e-9, 10.0),
    "epsilon_eval": (1e-9, 10.0),
    "sinkhorn_iterations": (1, 10_000),
    "threshold": (0.0, 1e3),
    "drop_path_rate": (0.0, 1.0),
}


class ConfigError(ValueError):
    """A config field has the wrong type or value; the message names it."""


@dataclass
class DetailSemNetConfig:
    backbone: str = "dsnet_tiny"
    img_size: int = 224
    match_dim: int = 96
    structural_weight: float = 1.0  # the paper's lambda
    epsilon_train: float = 0.1
    epsilon_eval: float = 0.05
    sinkhorn_iterations: int = 100
    threshold: float = 0.6  # decision threshold on the total distance, chosen on validation writers
    drop_path_rate: float = 0.0
    # "letterbox": crop to the ink, keep aspect; "stretch": the official whole-image resize;
    # "strokes": letterbox, then the centre lines at one width and tone (dsn.data.strokes)
    preprocessing: str = "letterbox"
    global_distance: str = "normalized_l2"  # "l2": plain L2 of the mean final token, as the official code
    structural_tokens: str = "normed"  # "pre_norm": head applied before the final norm, as the official code
    ink_mask: str = "stroke_fraction"  # "area_mean": the official rule (cell mean above the image's minimum)
    # Thresholds for a query judged against K references, chosen on validation writers per rule and K
    # ({"min": {"3": 0.35, ...}, "mean": {...}}): the minimum of K distances sits lower than one pair's
    # distance, so the pair threshold would accept far more forgeries. Empty: not calibrated.
    reference_thresholds: dict = field(default_factory=dict)
    reference_rule: str = "mean"  # the rule that decides when K > 1: the one with the lower val EER

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "str" and not isinstance(value, str):
                raise ConfigError(f"{f.name} must be a string, got {value!r}")
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{f.name} must be an integer, got {value!r}")
            if f.type == "float":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ConfigError(f"{f.name} must be a number, got {value!r}")
                if not math.isfinite(value):
                    raise ConfigError(f"{f.name} must be finite, got {value!r}")
                setattr(self, f.name, float(value))
            if f.name in RANGES:
                low, high = RANGES[f.name]
                if not low <= value <= high:
                    raise ConfigError(f"{f.name} must be between {low} and {high}, got {value!r}")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone must be one of this project's {list(BACKBONES)}, got {self.backbone[:80]!r}")
        _check_reference_thresholds(self.reference_thresholds)
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")

    def reference_threshold(self, rule: str, references: int) -> float | None:
        """The val-chosen threshold of ``rule`` over ``references`` distances, else None.

        Beyond the largest calibrated K the largest one is used: the combined distance
        changes less and less as references are added.
        """
        if rule not in REFERENCE_RULES:
            raise ValueError(f"rule must be one of {REFERENCE_RULES}, got {rule!r}")
        if references <= 1:
            return self.threshold
        table = {int(k): v for k, v in self.reference_thresholds.get(rule, {}).items()}
        usable = [k for k in table if k <= references]
        return table[max(usable)] if usable else None

    @classmethod
    def from_dict(cls, data: dict) -> DetailSemNetConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"config.json must hold an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"config.json has keys this version does not know: {unknown}")
        return cls(**data)

    @classmethod
    def official(cls, **overrides: object) -> DetailSemNetConfig:
        """The authors' network and distance: what ``convert-official`` writes."""
        base = dict(
            backbone="dsnet_official",
            preprocessing="stretch",
            global_distance="l2",
            structural_tokens="pre_norm",
            ink_mask="area_mean",
            epsilon_train=0.05,  # the official training epsilon; its eval epsilon (5e-8) gives no converged plan
            epsilon_eval=0.05,
            sinkhorn_iterations=300,
        )
        return cls(**{**base, **overrides})


def _check_reference_thresholds(value: object) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"reference_thresholds must be an object, got {value!r:.80}")
    for rule, table in value.items():
        if rule not in REFERENCE_RULES:
            raise ConfigError(f"reference_thresholds: rule must be one of {list(REFERENCE_RULES)}, got {rule!r:.40}")
        if not isinstance(table, dict):
            raise ConfigError(f"reference_thresholds[{rule!r}] must be an object of K -> threshold")
        for k, threshold in table.items():
            if not (isinstance(k, str) and k.isdigit() and 2 <= int(k) <= MAX_CALIBRATED_REFERENCES):
                raise ConfigError(f"reference_thresholds[{rule!r}]: K must be a number 2-{MAX_CALIBRATED_REFERENCES}, got {k!r:.40}")
            low, high = RANGES["threshold"]
            if (
                isinstance(threshold, bool)
                or not isinstance(threshold, int | float)
                or not (math.isfinite(threshold) and low <= threshold <= high)
            ):
                raise ConfigError(
                    f"reference_thresholds[{rule!r}][{k!r}] must be a threshold between {low} and {high}, got {threshold!r:.40}"
                )
