"""Your model (issue 26): an import path or an installed entry point, recorded in the run, through the whole chain."""
from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import run_cli
from user_data import image_folder
from user_package import uninstall

from edgerobust.models import ModelImportError, build_model, entry_points
from edgerobust.run import RunDir
from edgerobust.training import TrainConfig
from edgerobust.training.api import TrainSetup, train_model

FAST = TrainConfig(epochs=2, batch_size=16, lr=0.05, augment=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("images") / "f", per_class=12, size=(10, 10))


def own_recipe(tmp_path, folder, head: str = ""):
    """A recipe naming the package's model by import path, with kwargs, and the image folder cropped to 8x8."""
    recipe = tmp_path / "own.toml"
    recipe.write_text(head + f'''[model]
spec = "dronenets.nets:drone"
kwargs = {{ width = 4 }}
[data]
name = "imagefolder"
root = "{folder}"
options = {{ shape = [3, 8, 8], fit = "crop" }}
[train]
epochs = 1
batch_size = 16
''')
    return recipe


def test_an_import_path_model_is_recorded_and_rebuilt(package, folder, tmp_path):
    run = train_model(tmp_path / "r", "dronenets.nets:drone", "imagefolder", FAST,
                      TrainSetup(data_root=folder, model_options={"kwargs": {"width": 5}}), progress=False)
    info = run.manifest["model"]
    assert info["spec"] == "dronenets.nets:drone" and info["mean"] == [0.0] * 3 and info["std"] == [1.0] * 3
    assert info["source"] == {"kind": "import", "import": "dronenets.nets:drone", "package": "dronenets",
                              "version": "1.2.0", "kwargs": {"width": 5}, "passed": ["in_channels", "num_classes"]}
    assert run.manifest["dataset"]["train"]["classes"] == ["cat", "dog", "owl"]
    trained = torch.load(run.weights_path, weights_only=True)
    assert trained["net.stem.0.weight"].shape == (5, 3, 3, 3)
    rebuilt = RunDir.open(run.path).load_model()
    assert all(torch.equal(v, trained[k]) for k, v in rebuilt.state_dict().items())


def test_an_entry_point_model_is_listed_trained_and_recorded(package, tmp_path):
    assert entry_points()["drone-ep"].value == "dronenets.nets:drone"
    code, out, err = run_cli("models", "--shape", "3,8,8", "--classes", "3")
    assert code == 0 and "drone-ep" in out and "dronenets" in out, err
    code, out, err = run_cli("train", "--model", "drone-ep", "--data", "synthetic", "--out", tmp_path / "r",
                             "--epochs", "1", "-q")
    assert code == 0, err
    source = json.loads((tmp_path / "r" / "model.json").read_text())["model"]["source"]
    assert (source["kind"], source["entry_point"], source["package"], source["version"]) == \
        ("entry-point", "drone-ep", "dronenets", "1.2.0")


def test_mean_and_std_normalise_inside_the_model(package, tmp_path):
    code, _, err = run_cli("train", "--model", "dronenets.nets:drone", "--data", "digits", "--mean", "0.5",
                           "--std", "0.25", "--out", tmp_path / "r", "--epochs", "1", "-q")
    assert code == 0, err
    model = RunDir.open(tmp_path / "r").load_model()
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(model(x), model.net((x - 0.5) / 0.25))


def test_a_model_that_no_longer_imports_says_what_was_recorded(package, folder, tmp_path):
    run = train_model(tmp_path / "r", "dronenets.nets:drone", "imagefolder", FAST, TrainSetup(data_root=folder),
                      progress=False)
    uninstall(package)
    with pytest.raises(ModelImportError) as info:
        RunDir.open(run.path).load_model()
    line = str(info.value)
    assert "cannot import module 'dronenets.nets'" in line and "package dronenets 1.2.0" in line
    code, _, err = run_cli("evaluate", run.path, "--n", "4")
    assert code == 2 and "No module named 'dronenets'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("spec,kwargs,expected", [
    ("dronenets.nets:broken", None, "raised ValueError: the drone weights are not configured"),
    ("dronenets.nets:not_a_module", None, "returned a list, not a torch.nn.Module"),
    ("dronenets.nets:NOT_CALLABLE", None, "not a function or class"),
    ("dronenets.nets:missing", None, "has no attribute 'missing'"),
    ("nosuchpackage.nets:net", None, "No module named 'nosuchpackage'"),
    ("dronenets.nets:drone", {"depth": 3}, "unexpected keyword argument 'depth'"),
    ("scnn2:8-16", {"width": 3}, "takes no [model] kwargs"),
    ("not-a-model", None, "unknown model 'not-a-model'"),
], ids=["raises", "not-a-module", "not-callable", "no-attribute", "no-module", "bad-kwargs", "zoo-kwargs", "unknown"])
def test_bad_models_are_one_line(package, spec, kwargs, expected):
    with pytest.raises(Exception) as info:
        build_model(spec, (3, 8, 8), 3, kwargs=kwargs)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_the_chain_on_a_user_model_and_folder(package, folder, tmp_path):
    """Adversarial training, ADMM filter pruning with physical removal, evaluation, export and bench."""
    code, _, err = run_cli("train", "--model", "dronenets.nets:drone", "--data", "imagefolder", "--data-root", folder,
                           "--adv", "pgd", "--eps", "0.03", "--adv-steps", "2", "--epochs", "2", "--batch-size",
                           "16", "--out", tmp_path / "r", "-q")
    assert code == 0, err
    code, _, err = run_cli("compress", "--model", tmp_path / "r", "--keep", "0.5", "--admm-epochs", "1",
                           "--retrain-epochs", "1", "--out", tmp_path / "c", "-q")
    assert code == 0, err
    slim = RunDir.open(tmp_path / "c")
    compression = slim.manifest["compression"]
    assert compression["removed_channels"] and compression["physical"]["removed"]
    assert slim.manifest["model"]["physically_pruned"] and slim.manifest["model"]["source"]["kind"] == "import"
    assert slim.load_model().net.stem[0].weight.shape[0] < 8  # channels physically gone
    code, _, err = run_cli("evaluate", tmp_path / "c", "--n", "6", "--steps", "3", "--queries", "10", "--eps", "0.03")
    assert code == 0, err
    code, _, err = run_cli("export", tmp_path / "c", "--target", "x86-cpu")
    assert code == 0, err
    code, _, err = run_cli("bench", tmp_path / "c", "--target", "x86-cpu", "--runtime", "ort-cpu", "--batch", "1",
                           "--repeats", "3", "--warmup", "1", "--no-memory")
    assert code == 0, err
    assert {"robustness", "export", "bench"} <= set(RunDir.open(tmp_path / "c").manifest)


def test_a_layer_torch_pruning_does_not_know_is_reported_and_the_slim_net_reloads(package, folder, tmp_path):
    from edgerobust.compress.api import compress_model
    from edgerobust.config import CompressConfig

    run = train_model(tmp_path / "r", "dronenets.nets:scaled", "imagefolder", FAST, TrainSetup(data_root=folder),
                      progress=False)
    slim = compress_model(run, tmp_path / "c", CompressConfig(method="l1", keep=0.5, retrain_epochs=0), FAST,
                          progress=False)
    assert slim.manifest["compression"]["physical"]["unknown_layers"] == ["net.1.gain"]
    model = RunDir.open(slim.path).load_model()
    assert model.net[1].gain.shape == (1, 3, 1, 1)
    x = torch.rand(4, 3, 10, 10)
    masked = torch.load(slim.weights_path, weights_only=True)
    assert torch.equal(model.state_dict()["net.1.gain"], masked["net.1.gain"])
    assert model(x).shape == (4, 3)


def test_compress_pretrains_a_user_model_named_by_import_path_with_the_recipe_options(package, folder, tmp_path):
    recipe = own_recipe(tmp_path, folder)
    code, _, err = run_cli("compress", "--recipe", recipe, "--method", "l1", "--keep", "0.5", "--retrain-epochs", "0",
                           "--no-evaluate", "--out", tmp_path / "c", "-q")
    assert code == 0, err
    dense = RunDir.open(tmp_path / "c" / "pretrain").manifest
    assert dense["model"]["source"]["kwargs"] == {"width": 4} and dense["model"]["input_shape"] == [3, 8, 8]
    assert dense["dataset"]["options"] == {"shape": [3, 8, 8], "fit": "crop"}
    slim = RunDir.open(tmp_path / "c")
    assert slim.input_shape == (3, 8, 8) and slim.manifest["compression"]["removed_channels"]


def test_distillation_reads_the_teachers_image_folder_as_it_was_read(package, folder, tmp_path):
    from edgerobust.distill.api import distill_model
    from edgerobust.distill.settings import DistillConfig

    options = {"shape": [3, 8, 8], "fit": "crop"}
    teacher = train_model(tmp_path / "t", "dronenets.nets:drone", "imagefolder", FAST,
                          TrainSetup(data_root=folder, data_options=options), progress=False)
    student = distill_model(tmp_path / "s", teacher, DistillConfig(student="dronenets.nets:drone", eval_n=4,
                                                                   pgd_steps=1, validation=0.2),
                            TrainConfig(epochs=1, batch_size=16), progress=False)
    assert student.input_shape == (3, 8, 8)  # the folder's 10x10 files, cropped as the teacher's were
    assert student.manifest["dataset"]["root"] == str(folder) and student.manifest["dataset"]["options"] == options


def test_physical_removal_of_a_graph_it_cannot_follow_keeps_the_masked_net(monkeypatch):
    from edgerobust.compress import physical

    net = build_model("scnn2:4-8", (1, 8, 8), 3)
    monkeypatch.setattr(physical, "remove_dead_channels", lambda *a: (_ for _ in ()).throw(ValueError("no graph")))
    slim, removed, diff, report = physical.remove_and_check(net, (1, 8, 8), torch.rand(2, 1, 8, 8), 1e-4,
                                                            strict=False)
    assert slim is net and removed == {} and report == {"removed": False, "reason": "torch-pruning failed: no graph"}
    with pytest.raises(ValueError):
        physical.remove_and_check(net, (1, 8, 8), torch.rand(2, 1, 8, 8), 1e-4, strict=True)



def test_a_pipeline_recipe_names_an_import_path_model_and_an_image_folder(package, folder, tmp_path):
    recipe = own_recipe(tmp_path, folder, '[pipeline]\nsteps = ["train", "clean-eval", "export"]\n')
    code, out, err = run_cli("pipeline", "--recipe", recipe, "--out", tmp_path / "p", "-q")
    assert code == 0, err
    manifest = RunDir.open(tmp_path / "p" / "model").manifest
    assert manifest["model"]["source"]["kwargs"] == {"width": 4} and manifest["model"]["input_shape"] == [3, 8, 8]
    assert manifest["dataset"]["options"] == {"shape": [3, 8, 8], "fit": "crop"}
    assert (tmp_path / "p" / "export-x86-cpu" / "manifest.json").is_file()  # parity read the 8x8 crops
    code, _, err = run_cli("evaluate", tmp_path / "p" / "model", "--n", "4", "--suite", "none", "--attack", "fgsm",
                           "--minimal", "none", "--no-masking")  # the 10x10 files read with the run's options
    assert code == 0, err
    assert RunDir.open(tmp_path / "p" / "model").manifest["robustness"]
    manifest["dataset"]["options"] = {}  # without them the same files are 10x10: refused, not evaluated
    (tmp_path / "p" / "model" / "model.json").write_text(json.dumps(manifest))
    code, _, err = run_cli("evaluate", tmp_path / "p" / "model", "--n", "4", "--suite", "none", "--attack", "fgsm",
                           "--minimal", "none", "--no-masking")
    assert code == 2 and "shape (3, 10, 10)" in err and "takes (3, 8, 8)" in err, err


@pytest.mark.ssh
def test_device_replay_of_a_user_model_on_the_loopback_test_bed(package, folder, device_python, ssh_bed, tmp_path):
    from edgerobust.config import DeviceConfig, ExportConfig
    from edgerobust.export.api import export_run
    from edgerobust.remote.api import device_replay

    run = train_model(tmp_path / "r", "dronenets.nets:drone", "imagefolder", FAST, TrainSetup(data_root=folder),
                      progress=False)
    export_run(run, ExportConfig(target="x86-cpu", calibration=0, golden=6), progress=False)
    options = DeviceConfig(host=ssh_bed.alias, python=str(device_python), root=str(tmp_path / "ssh-device"),
                           ssh_config=str(ssh_bed.config), target="x86-cpu", name="edge-a")
    doc = device_replay(RunDir.open(run.path), options)
    clean = doc["rows"][0]["sets"]["clean"]
    assert doc["device"]["transport"] == "ssh" and clean["count"] == 6 and clean["gap"] == 0.0
