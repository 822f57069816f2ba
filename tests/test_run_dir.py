"""RunDir answers its own questions: the dataset a run used, its bundles (from any working directory), its
precisions."""
from __future__ import annotations

import json

from cli_helpers import run_cli

from edgerobust.run import RunDir

RECIPE = """[model]
spec = "mlp:16"
[data]
name = "digits"
[train]
epochs = 1
[export]
target = "x86-cpu"
golden = 16
calibration = 0
[pipeline]
steps = ["train", "export"]
"""


def test_a_pipeline_run_is_verified_and_benched_from_another_working_directory(tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    (work / "recipe.toml").write_text(RECIPE)
    monkeypatch.chdir(work)
    code, _, err = run_cli("pipeline", "--recipe", "recipe.toml", "--out", "runs/pipeline", "-q")  # relative --out
    assert code == 0, err
    monkeypatch.chdir(elsewhere)
    path = work / "runs" / "pipeline" / "model"
    run = RunDir.open(path)
    assert run.manifest["export"]["x86-cpu"]["bundle"] == "../export-x86-cpu"  # recorded relative to the run
    assert run.bundle("x86-cpu").resolve() == (work / "runs" / "pipeline" / "export-x86-cpu").resolve()
    assert run.latest_bundle() == run.bundle("x86-cpu") and run.bundle("jetson-nano") is None
    assert run.dataset_name == "digits" and run.data_root is None
    assert run.precisions("x86-cpu") == json.loads((run.bundle("x86-cpu") / "manifest.json").read_text())["precisions"]
    code, out, err = run_cli("verify", str(path))  # a run: its latest bundle
    assert code == 0, err
    assert "files match the manifest" in out and "latest bundle of run" in out + err
    code, out, err = run_cli("bench", str(path), "--host", "local", "--device-dir", str(tmp_path / "device"),
                             "--batch", "1", "--repeats", "3", "--warmup", "1", "--max-cv", "1e9", "-q")
    assert code == 0, err
    assert (path / "device" / "local").is_dir()
