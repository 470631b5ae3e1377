"""The embedded demo dataset (`hilif-prep demo`): :mod:`.plan` lays out and encodes the videos,
:mod:`.render` draws their pixels."""

from .plan import (
    DEMO_JSON,
    QUALITY_CRF,
    DemoConfig,
    DemoError,
    DemoResult,
    SourceVideo,
    encode_mp4,
    load_demo_json,
    make_demo,
    plan_sources,
    split_pairs,
)
from .render import IDENTITIES, METHODS, FaceSourceError, Identity

__all__ = [
    "DEMO_JSON",
    "IDENTITIES",
    "METHODS",
    "QUALITY_CRF",
    "DemoConfig",
    "DemoError",
    "DemoResult",
    "FaceSourceError",
    "Identity",
    "SourceVideo",
    "encode_mp4",
    "load_demo_json",
    "make_demo",
    "plan_sources",
    "split_pairs",
]
