"""CI runs everything: under CI=true a skipped browser test fails the run, and .ci/run fails without Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_BROWSER_TEST = '''
import pytest

@pytest.mark.browser
@pytest.mark.skipif(True, reason="no chromium here")
def test_page():
    pass

@pytest.mark.skipif(True, reason="not a browser test")
def test_other():
    pass
'''


def run_pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_page.py").write_text(SKIPPED_BROWSER_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    browser: browser\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci is not None else {})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


def test_a_skipped_browser_test_fails_under_ci(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, "true")
    assert done.returncode == 1, done.stdout[-2000:]
    assert "1 skipped, 1 error" in done.stdout  # the browser test fails (in its setup, where skipif skips)
    assert "a browser test may not skip (no chromium here)" in done.stdout
    assert "apt-get install -y chromium" in done.stdout


def test_outside_ci_it_skips(tmp_path: Path) -> None:
    for ci in (None, "false"):
        done = run_pytest(tmp_path, ci)
        assert done.returncode == 0 and "2 skipped" in done.stdout, done.stdout[-2000:]


def test_ci_run_fails_when_chromium_cannot_be_installed(tmp_path: Path) -> None:
    """.ci/run with no Chromium and an apt-get that fails: exit 1 before any test, saying why."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text("#!/bin/sh\necho 'E: Unable to locate package chromium' >&2\nexit 100\n")
    (bin_dir / "apt-get").chmod(0o755)
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "EDGE_GCL_CHROMIUM": str(tmp_path / "no-chromium"),
                        "EDGE_GCL_CI_DRY_RUN": "1"}
    done = subprocess.run(["bash", str(ROOT / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Chromium could not be installed" in done.stderr and "pytest" not in done.stdout
    ok = env | {"EDGE_GCL_CHROMIUM": "/bin/sh"}  # any executable stands in for a present Chromium
    done = subprocess.run(["bash", str(ROOT / ".ci" / "run")], capture_output=True, text=True, env=ok, timeout=120)
    assert done.returncode == 0 and "python -m pytest -q --durations=15" in done.stdout, (done.stdout, done.stderr)
