"""hilif.model: the HiLIF two-stream detector and its local relationship constraint loss (no I/O, no CLI)."""

from .backbone import BackboneWeightsError
from .config import HiLIFConfig
from .hilif import HiLIF, build_model
from .loss import LocalRelationLoss, local_max_difference

__all__ = ["HiLIFConfig", "HiLIF", "build_model", "LocalRelationLoss", "local_max_difference", "BackboneWeightsError"]
