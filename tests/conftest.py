from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLICKR = SHARED_DATA / "flickr8k"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
# edge-gcl's user data folder (default index, recorded artifacts): never the real user's in tests
os.environ["EDGE_GCL_HOME"] = tempfile.mkdtemp(prefix="edge-gcl-test-home-")
for _name in ("EDGE_GCL_INDEX", "EDGE_GCL_MODEL", "EDGE_GCL_HTP_ARCH"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def flickr() -> Path:
    if not (FLICKR / "captions.txt").exists():
        pytest.skip(f"{FLICKR} not present (the shared research data set)")
    return FLICKR


# CUDA-only tests (tests/gpu/) are collected only when asked for: `benchmarks/gpu_check.sh` sets
# EDGE_GCL_GPU_TESTS=1 (where they skip without a GPU). The default suite never lists them as skipped.
collect_ignore = [] if os.environ.get("EDGE_GCL_GPU_TESTS") else ["gpu"]


def in_ci() -> bool:
    """Under CI (`CI=true`, as GitHub Actions, GitLab and .ci/run set it) no check may vanish quietly."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Under CI a skipped `browser` test fails the run: without Chromium the app's page is not tested, and
    a quiet skip would let CI pass anyway."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and item.get_closest_marker("browser") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"CI=true: a browser test may not skip ({reason}); install Chromium: apt-get install -y chromium"
