"""Shared fixtures for every area's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The small demo built once per test session: 6 source videos (one pair per split), 8 frames of
#: 384x288 (the default size) at 10 fps, c23 and c40, all four methods -> 6 reals and 24 fakes per quality.
SMALL_DEMO = dict(num_sources=6, seconds=0.8, fps=10, qualities=("c23", "c40"), seed=0, workers=1)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """Path of a small demo dataset (FF++ layout, splits/, demo.json), built once per session. Do not modify it."""
    from hilif.pipeline.demo import DemoConfig, make_demo

    out = tmp_path_factory.mktemp("small_demo") / "demo"
    make_demo(DemoConfig(out=out, **SMALL_DEMO))
    return out
