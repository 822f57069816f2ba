"""The commands as users write them (issue 17): profile aliases, and RUN chosen when it is left out."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from cli_helpers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerobust.devices import list_profiles, load_profile, profile_from_dict, resolve_target
from edgerobust.devices.catalog import alias_table
from edgerobust.devices.profile import ProfileError
from edgerobust.errors import EdgeRobustError
from edgerobust.run import MANIFEST_FORMAT
from edgerobust.run_select import NO_RUN, choose_bundle, choose_run

BUILTIN_ALIASES = {"jetson": "jetson-nano", "nano": "jetson-nano", "orin": "jetson-orin-nano", "x86": "x86-cpu",
                   "cpu": "x86-cpu", "nano-cpu": "jetson-nano-cpu"}


@contextlib.contextmanager
def inside(path: Path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(previous)


def words(text: str) -> str:
    """Help text without rich's box and line breaks."""
    return " ".join(text.replace("│", " ").split())


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---- aliases ---------------------------------------------------------------------------------------------------------
def test_builtin_aliases_resolve_and_do_not_clash():
    for alias, name in BUILTIN_ALIASES.items():
        profile, used = resolve_target(alias)
        assert profile.name == name and used == alias and load_profile(alias).name == name
    assert resolve_target("jetson-nano")[1] is None  # a name is not an alias
    table = alias_table(list_profiles())
    names = {p.name for p in list_profiles()}
    assert not set(table) & names and {a: p.name for a, p in table.items()}.items() >= BUILTIN_ALIASES.items()


def _user_profile(directory: Path, name: str, aliases: list[str], base: str = "x86-cpu") -> Path:
    from edgerobust.cli.devices import profile_text

    text = profile_text(load_profile(base))
    text = text.replace(f'name = "{base}"', f'name = "{name}"\naliases = {json.dumps(aliases)}')
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def test_alias_claimed_twice_or_naming_another_profile_is_refused_naming_both(tmp_path):
    with inside(tmp_path):
        mine = _user_profile(tmp_path / "devices", "my-nano", ["jetson"], base="jetson-nano")
        with pytest.raises(ProfileError, match=r"alias 'jetson' is also an alias of profile 'jetson-nano'"):
            load_profile("jetson")
        assert load_profile("jetson-nano").name == "jetson-nano"  # names still work
        for args in (("devices", "validate", mine), ("devices", "list"), ("export", "--target", "jetson")):
            code, _, err = run_cli(*args)
            line = one_line(err)
            assert code == 2 and "my-nano.toml" in line and "jetson-nano" in line and "'jetson'" in line, args
        mine.unlink()
        _user_profile(tmp_path / "devices", "board", ["x86-cpu"])
        code, _, err = run_cli("devices", "validate", tmp_path / "devices" / "board.toml")
        assert code == 2 and "alias 'x86-cpu' is the name of profile 'x86-cpu'" in one_line(err)


@pytest.mark.parametrize("aliases,message", [
    (["x86-cpu"], "is the profile's own name"), (["Jetson"], "must be lower-case"), ([3], "must be lower-case"),
    (["a", "a"], "lists an alias twice"), ("x86", "field 'aliases' must be list"),
])
def test_bad_aliases_in_a_profile_name_the_field(aliases, message):
    import tomllib

    from edgerobust.cli.devices import profile_text

    data = tomllib.loads(profile_text(load_profile("x86-cpu")))
    with pytest.raises(ProfileError, match=message):
        profile_from_dict({**data, "aliases": aliases}, "mine.toml")


def test_unknown_alias_lists_names_and_aliases(tmp_path):
    code, _, err = run_cli("devices", "show", "jet")
    line = one_line(err)
    assert code == 2 and "unknown target 'jet'" in line and "jetson (= jetson-nano)" in line and "x86-cpu" in line


def test_devices_list_and_show_give_aliases_and_a_copy_claims_none():
    code, out, _ = run_cli("devices", "list")
    assert code == 0 and "jetson, nano → jetson-nano" in out and "x86, cpu" in out
    code, out, _ = run_cli("devices", "show", "orin")
    assert code == 0 and "jetson-orin-nano" in out and "orin-nano" in out
    code, text, _ = run_cli("devices", "show", "jetson", "--toml")
    assert code == 0 and "\naliases" not in text and "# aliases of the original" in text


def test_unreadable_profile_files_break_only_their_own_lookups(tmp_path):
    devices = tmp_path / "devices"
    (devices / "weird.toml").mkdir(parents=True)
    with inside(tmp_path):
        assert load_profile("jetson").name == "jetson-nano" and "weird" not in {p.name for p in list_profiles()}
        code, out, _ = run_cli("devices", "list")
        assert code == 0 and "jetson-nano" in out
        code, _, err = run_cli("devices", "validate", devices / "weird.toml")
        assert code == 2 and "is a directory, not a file" in one_line(err)
        (devices / "latin.toml").write_bytes('name = "latin"\ndescription = "caf\xe9"\n'.encode("latin-1"))
        assert load_profile("x86-cpu").name == "x86-cpu"  # a name lookup reads only its own file
        for args in (("devices", "list"), ("devices", "validate", devices / "latin.toml"), ("devices", "show", "x86")):
            code, _, err = run_cli(*args)
            assert code == 2 and "latin.toml is not UTF-8 text (byte 0xe9" in one_line(err), args


# ---- choosing the run ------------------------------------------------------------------------------------------------
def fake_run(path: Path, updated: str, mtime: float | None = None) -> Path:
    path.mkdir(parents=True)
    manifest = path / "model.json"
    manifest.write_text(json.dumps({"format": MANIFEST_FORMAT, "created": "2020-01-01T00:00:00+00:00",
                                    "updated": updated, "model": {"spec": "scnn2:4-8", "input_shape": [1, 8, 8],
                                                                   "num_classes": 10, "mean": [0.0], "std": [1.0]}}))
    if mtime is not None:
        os.utime(manifest, (mtime, mtime))
    return path


def test_most_recent_run_by_manifest_time_not_file_time(tmp_path):
    fake_run(tmp_path / "runs" / "old", "2024-01-01T00:00:00+00:00", mtime=2e9)  # newest file, oldest manifest
    fake_run(tmp_path / "runs" / "pipeline" / "compressed", "2025-06-01T00:00:00+00:00", mtime=1e9)
    fake_run(tmp_path / "runs" / ".hidden", "2030-01-01T00:00:00+00:00")
    chosen = choose_run(cwd=tmp_path)
    assert chosen.path == tmp_path / "runs" / "pipeline" / "compressed"
    assert chosen.note == "using runs/pipeline/compressed, the most recent run; pass RUN to choose another"
    assert choose_run(tmp_path / "runs" / "old", cwd=tmp_path).note is None  # a run given is used as given
    here = choose_run(cwd=tmp_path / "runs" / "old")
    assert here.path == tmp_path / "runs" / "old" and "current directory" in here.note


def test_same_second_is_decided_by_the_manifest_file(tmp_path):
    fake_run(tmp_path / "runs" / "a", "2025-06-01T00:00:00+00:00", mtime=1e9 + 0.5)
    fake_run(tmp_path / "runs" / "b", "2025-06-01T00:00:00+00:00", mtime=1e9)
    assert choose_run(cwd=tmp_path).path.name == "a"


@pytest.mark.parametrize("content", ["{", "[]", '{"format": "other"}', b"\xff\xfe"])
def test_a_broken_run_is_named_not_skipped(tmp_path, content):
    fake_run(tmp_path / "runs" / "good", "2025-06-01T00:00:00+00:00")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(EdgeRobustError, match=f"{broken} looks like a run but"):
        choose_run(cwd=broken)
    with inside(broken):
        code, out, err = run_cli("report")
    assert code == 2 and "looks like a run" in one_line(err) and "good" not in err + out
    shutil.move(broken, tmp_path / "runs" / "broken")  # under ./runs too: named, not skipped
    with pytest.raises(EdgeRobustError, match="broken looks like a run but"):
        choose_run(cwd=tmp_path)


def test_no_run_anywhere(tmp_path):
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    with pytest.raises(EdgeRobustError) as info:
        choose_run(cwd=tmp_path)
    assert str(info.value) == NO_RUN and "edgerobust pipeline" in NO_RUN


def test_bundle_of_the_chosen_run(tmp_path):
    run = fake_run(tmp_path / "runs" / "r", "2025-06-01T00:00:00+00:00")
    with pytest.raises(EdgeRobustError, match="has no export bundle; make one with `edgerobust export`"):
        choose_bundle(cwd=tmp_path)
    manifest = json.loads((run / "model.json").read_text())
    manifest["export"] = {"x86-cpu": {"bundle": "/moved/away/export-x86-cpu", "created": "2025-06-01T00:00:01"},
                          "jetson-nano": {"bundle": str(run / "export-jetson-nano"), "created": "2025-06-01T00:00:02"}}
    (run / "model.json").write_text(json.dumps(manifest))
    (run / "export-jetson-nano").mkdir()
    chosen = choose_bundle(cwd=tmp_path)
    assert chosen.path == run / "export-jetson-nano" and chosen.note.startswith("using runs/r/export-jetson-nano")
    (run / "export-jetson-nano" / "manifest.json").write_text("{}")
    assert choose_bundle(cwd=run / "export-jetson-nano").path == run / "export-jetson-nano"
    # two exports in the same second: the bundle whose manifest was written last
    manifest["export"]["x86-cpu"] = {"bundle": str(run / "export-x86-cpu"), "created": "2025-06-01T00:00:02"}
    (run / "model.json").write_text(json.dumps(manifest))
    (run / "export-x86-cpu").mkdir()
    for name, mtime in (("export-x86-cpu", 2e9), ("export-jetson-nano", 1e9)):
        (run / name / "manifest.json").write_text("{}")
        os.utime(run / name / "manifest.json", (mtime, mtime))
    assert choose_bundle(cwd=tmp_path).path == run / "export-x86-cpu"
    shutil.rmtree(run / "export-x86-cpu")
    shutil.rmtree(run / "export-jetson-nano")
    with pytest.raises(EdgeRobustError, match="recorded by run .* no longer exists"):
        choose_bundle(cwd=tmp_path)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=6, unique=True), st.randoms(use_true_random=False))
def test_the_run_with_the_latest_manifest_time_is_chosen(offsets, rng):
    import datetime as dt

    base = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, offset in enumerate(offsets):
            stamp = (base + dt.timedelta(seconds=offset)).isoformat(timespec="seconds")
            fake_run(root / "runs" / f"r{i}" / ("deep" if rng.random() < 0.5 else ""), stamp,
                     mtime=rng.uniform(1e9, 2e9))
        latest = offsets.index(max(offsets))
        assert choose_run(cwd=root).path.relative_to(root / "runs").parts[0] == f"r{latest}"


# ---- the commands exactly as written -------------------------------------------------------------------------------
FAST = """
[pipeline]
steps = ["train", "compress", "export"]
[model]
spec = "scnn2:4-8"
[data]
name = "digits"
[train]
epochs = 1
batch_size = 128
lr = 0.05
seed = 0
augment = false
[compress]
method = "admm"
scheme = "filter"
keep = 0.5
admm_epochs = 1
retrain_epochs = 1
[compress.evaluate]
eps = 0.1
pgd_steps = 2
n = 20
[export]
target = "x86-cpu"
golden = 8
calibration = 0
"""
USING = "using runs/pipeline/compressed, the most recent run; pass RUN to choose another"


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    """A directory where `edgerobust pipeline` (a fast recipe) has run."""
    root = tmp_path_factory.mktemp("user")
    (root / "fast.toml").write_text(FAST)
    with inside(root):
        code, _, err = run_cli("pipeline", "--recipe", "fast.toml", "-q")
    assert code == 0, err
    return root


@pytest.mark.parametrize("args", [("export", "--target", "jetson"), ("bench",), ("verify",), ("report",),
                                  ("evaluate",)])
def test_in_an_empty_directory_one_line_says_how_to_make_a_run(tmp_path, args):
    with inside(tmp_path):
        code, out, err = run_cli(*args)
    assert code == 2 and one_line(err) == f"error: {NO_RUN}" and list(tmp_path.iterdir()) == []


def test_export_target_jetson_as_written(piped):
    with inside(piped):
        code, out, err = run_cli("export", "--target", "jetson")
    assert code == 0, err
    assert out.splitlines()[:2] == [USING, "target jetson → jetson-nano"]
    bundle = piped / "runs" / "pipeline" / "compressed" / "export-jetson-nano"
    assert json.loads((bundle / "manifest.json").read_text())["target"] == "jetson-nano"
    with inside(piped):
        code, out, err = run_cli("verify")
    assert code == 0, err
    assert out.splitlines()[0].startswith("using runs/pipeline/compressed/export-jetson-nano, the bundle of the most "
                                          "recent run") and "golden outputs reproduced" in out
    with inside(piped):
        code, _, err = run_cli("export", "--target", "jet")
    line = one_line(err)
    assert code == 2 and "unknown target 'jet'" in line and "jetson (= jetson-nano)" in line


def test_bench_and_report_as_written(piped):
    with inside(piped):
        code, out, err = run_cli("bench")
    assert code == 0, err
    assert out.splitlines()[0] == USING and (piped / "runs" / "pipeline" / "compressed" / "bench.json").is_file()
    with inside(piped / "runs" / "pipeline" / "model"):
        code, out, err = run_cli("report")
    assert code == 0, err
    assert out.splitlines()[0] == "using the run in the current directory; pass RUN to choose another"
    assert (piped / "runs" / "pipeline" / "model" / "report.md").is_file()


def test_help_shows_the_short_forms():
    for command in ("export", "bench", "evaluate", "report", "verify"):
        code, out, _ = run_cli(command, "--help")
        assert code == 0 and "most recent run" in words(out), command
    code, out, _ = run_cli("export", "--help")
    assert "alias (jetson, orin, x86, ...)" in words(out)
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for short in ("`edgerobust export --target jetson`", "`edgerobust bench`", "`edgerobust compress`"):
        assert short in readme


@pytest.mark.slow
def test_compress_as_written_after_a_pipeline_and_in_an_empty_directory(piped, tmp_path):
    for where in (piped, tmp_path):
        with inside(where):
            code, out, err = run_cli("compress")
        assert code == 0, err
        assert (where / "runs" / "compress" / "model.json").is_file()
    with inside(piped):  # the compressed run is now the most recent one
        code, out, err = run_cli("export", "--target", "jetson")
    assert code == 0 and out.splitlines()[0] == "using runs/compress, the most recent run; pass RUN to choose another"
