"""edge_gcl.locations: which index and which model the CLI and the app use when none is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_gcl.locations import (
    ARTIFACTS_RECORD,
    NoModelError,
    data_dir,
    default_index,
    default_model,
    environment,
    record_artifacts,
    recorded_artifacts,
    recorded_elsewhere,
)

pytestmark = pytest.mark.runtime  # runs in the torch-free install too (tests/test_runtime_install.py)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGE_GCL_HOME", str(tmp_path / "home"))
    for name in ("EDGE_GCL_INDEX", "EDGE_GCL_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def fake_artifacts(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    return folder


def test_index_defaults_to_the_user_data_folder_or_the_environment(home: Path, monkeypatch) -> None:
    assert data_dir() == home and default_index() == home / "index"
    monkeypatch.setenv("EDGE_GCL_INDEX", "~/photos-index")
    assert default_index() == Path.home() / "photos-index"


def test_without_edge_gcl_home_the_platform_data_folder(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDGE_GCL_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # platformdirs on Linux
    if not str(data_dir()).startswith(str(tmp_path / "xdg")):
        pytest.skip("not a platform where XDG_DATA_HOME places the user data folder")
    assert data_dir() == tmp_path / "xdg" / "edge-gcl"


def test_model_order_explicit_environment_recorded_then_local_artifacts(home: Path, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(NoModelError, match=r"python -m export.compile --target snapdragon") as info:
        default_model()
    assert "\n" not in str(info.value)  # one line for the CLI
    local = fake_artifacts(tmp_path / "artifacts")
    assert default_model().spec == "artifacts" and default_model().source == "./artifacts"
    built = fake_artifacts(tmp_path / "elsewhere" / "build")
    record = record_artifacts(built)
    assert record == home / ARTIFACTS_RECORD
    assert json.loads(record.read_text())["environments"][environment()]["path"] == str(built)
    assert default_model().spec == str(built) and "export.compile" in default_model().source
    assert environment() in default_model().source and str(record) in default_model().source  # says which, where
    monkeypatch.setenv("EDGE_GCL_MODEL", str(local))
    assert default_model().spec == str(local) and default_model().source == "$EDGE_GCL_MODEL"
    assert default_model("default").spec == "default" and default_model("default").source == "--model"


def test_a_recorded_folder_that_is_gone_is_ignored(home: Path, tmp_path: Path) -> None:
    built = fake_artifacts(tmp_path / "build")
    record_artifacts(built)
    (built / "manifest.json").unlink()
    assert recorded_artifacts() is None
    with pytest.raises(NoModelError):
        default_model()
    (home / ARTIFACTS_RECORD).write_text("not json")
    assert recorded_artifacts() is None


def test_only_artifacts_folders_are_recorded(home: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an artifacts folder"):
        record_artifacts(tmp_path)
    assert not (home / ARTIFACTS_RECORD).exists()


def test_a_build_recorded_by_another_environment_is_named_never_used(home: Path, tmp_path: Path) -> None:
    """A second clone with its own venv: the first clone's build is not its default model, and the
    error that says so names it (issue 34: hidden per-user state)."""
    first = fake_artifacts(tmp_path / "clone-a" / "artifacts")
    record_artifacts(first, env=str(tmp_path / "clone-a" / ".venv"))
    assert recorded_artifacts() is None and recorded_artifacts(env=str(tmp_path / "clone-a" / ".venv")) == first
    assert recorded_elsewhere() == {str(tmp_path / "clone-a" / ".venv"): first}
    with pytest.raises(NoModelError, match="other environments built .*clone-a/artifacts: pass one with --model"):
        default_model()
    mine = fake_artifacts(tmp_path / "clone-b" / "artifacts")
    record_artifacts(mine)  # this environment's build; the other one's entry stays
    assert default_model().spec == str(mine) and recorded_elsewhere() == {str(tmp_path / "clone-a" / ".venv"): first}


def test_a_record_from_before_environments_is_not_used(home: Path, tmp_path: Path) -> None:
    built = fake_artifacts(tmp_path / "build")
    home.mkdir(parents=True)
    (home / ARTIFACTS_RECORD).write_text(json.dumps({"path": str(built)}))  # edge-gcl 0.1.0's record: whose?
    assert recorded_artifacts() is None
    with pytest.raises(NoModelError):
        default_model()
    record_artifacts(built)
    assert recorded_artifacts() == built
