from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLICKR = SHARED_DATA / "flickr8k"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network


@pytest.fixture(scope="session")
def flickr() -> Path:
    if not (FLICKR / "captions.txt").exists():
        pytest.skip(f"{FLICKR} not present (the shared research data set)")
    return FLICKR
