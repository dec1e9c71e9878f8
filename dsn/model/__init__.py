"""The network and its weights: DSI backbones (ours and the authors'), optimal-transport matching,
DetailSemNet, checkpoint loading. Knows nothing of image files or UIs.

Importing this package registers ``dsnet_*`` and ``dsnet_official*`` with timm.
"""

from dsn.model.config import ConfigError, DetailSemNetConfig
from dsn.model.detailsemnet import DetailSemNet, Embedding, Verification
from dsn.model.weights import WeightsError, default_weights

__all__ = ["ConfigError", "DetailSemNet", "DetailSemNetConfig", "Embedding", "Verification", "WeightsError", "default_weights"]
