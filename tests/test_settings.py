"""Settings declared once: the parsers, MLproject, config.json, profiles and a configuration's
identity all come from pipeline/config.py, and every value has one spelling."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from pipeline import cli, config, identity, mlproject, profiles
from pipeline.errors import UserError

STEP_CLASSES = list(config.STEP_SETTINGS.items())


def test_the_committed_mlproject_is_the_generated_one():
    committed = (config.ROOT / "MLproject").read_text()
    assert committed == mlproject.render(), "run `make mlproject` after changing a setting"


@pytest.mark.parametrize("step, cls", STEP_CLASSES, ids=[s for s, _ in STEP_CLASSES])
def test_spellings_round_trip(step, cls):
    default = cls()
    params = default.params()
    assert cls.from_params(params) == default
    assert cls.from_params(params).params() == params
    assert cls.from_dict(json.loads(json.dumps(default.to_dict()))) == default
    assert set(params) == {leaf.name for leaf in cls.leaves()}
    assert cli.parse(step, [f"--{k}={v}" for k, v in params.items()]) == default


SAME = [
    ({"flip": "True"}, {"flip": "true"}),
    ({"flip": True}, {"flip": "1"}),
    ({"augment": "shift,rotate"}, {"augment": ["rotate", "shift"]}),
    ({"augment": "none"}, {"augment": []}),
    ({"options": "width=32,blocks=4"}, {"options": {"blocks": 4, "width": 32}}),
    ({"lr": "1e-3"}, {"lr": 0.001}),
    ({"weight_decay": 0}, {"weight_decay": "0.0"}),
    ({"dropout": "none"}, {"dropout": None}),
    ({"deterministic": "False"}, {"deterministic": False}),
]


@pytest.mark.parametrize("a, b", SAME)
def test_every_spelling_of_a_value_logs_one_spelling(a, b):
    first = config.TrainSettings.from_params(a).params()
    assert first == config.TrainSettings.from_params(b).params()
    assert all(
        text == text.strip() and text not in ("True", "False", "None", "[]")
        for text in first.values()
    )


BAD = [
    ("train", {"epochs": "0"}, "epochs"),
    ("train", {"epochs": "2.5"}, "epochs"),
    ("train", {"lr": "nan"}, "lr"),
    ("train", {"lr": "inf"}, "lr"),
    ("train", {"lr": "-1"}, "lr"),
    ("train", {"augment": "rotate,,zoom"}, "empty item"),
    ("train", {"augment": "blur"}, "blur"),
    ("train", {"flip": "maybe"}, "flip"),
    ("train", {"resume": "not-a-run"}, "resume"),
    ("train", {"label_smoothing": "0.1", "loss": "mse"}, "label_smoothing"),
    ("train", {"nonsense": "1"}, "nonsense"),
    ("train", {"subset": "5"}, "subset must be 0 or at least 10"),
    ("train", {"options": "blocks=1,blocks=2"}, "blocks twice"),
    ("tune", {"lr_min": "0.1", "lr_max": "0.01"}, "lr_min"),
    ("tune", {"resume": "true"}, "resume"),
    ("evaluate", {"run_id": "xyz"}, "run_id"),
    ("main", {"profile": "no-such-profile"}, "not found"),
    ("main", {"gpus_per_job": "0.5"}, "gpus_per_job applies to executor=ray"),
]


@pytest.mark.reliability
@pytest.mark.parametrize("step, params, word", BAD, ids=[f"{s}-{w}" for s, _, w in BAD])
def test_bad_values_are_one_clear_error(step, params, word):
    with pytest.raises(UserError, match=word):
        config.STEP_SETTINGS[step].from_params(params)


def test_tune_settings_nest_the_trials_base_settings():
    tune = config.TuneSettings.from_params({"model": "lenet5", "epochs": "3", "schedule": "linear"})
    assert tune.base.model == "lenet5" and tune.base.epochs == 3 and tune.base.schedule == "linear"
    assert config.TuneSettings().base.epochs == 5  # trials default to 5 epochs, train to 10
    assert "resume" not in tune.params()


@pytest.mark.parametrize("name", sorted(p.stem for p in config.PROFILES_DIR.glob("*.toml")))
def test_every_profile_loads_and_states_what_it_tunes(name):
    profile = profiles.load(name)
    assert profile.train or profile.tune
    for job in profile.tune:
        assert "final_seeds" in job.given, f"{name}: a tuning profile states its final_seeds"


def test_reports_cpu_is_a_part_of_reports():
    """The README calls it the part of `reports` that fits a CPU: each of its runs is one
    that `reports` makes too (so a later `PROFILE=reports` reuses it), on the same split."""
    part, whole = profiles.load("reports-cpu"), profiles.load("reports")
    assert part.prepare == whole.prepare
    assert part.train and all(
        job.settings in [j.settings for j in whole.train] for job in part.train
    )


def test_a_bad_profile_entry_names_the_profile(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[train]]\nmodel = "mlp"\nepochs = 0\n')
    with pytest.raises(UserError, match=r"bad.toml, \[\[train\]\]: .*epochs"):
        profiles.load(str(bad))  # the section as the profile spells it (it said [train])
    bad.write_text('[compare]\nmetric = "magic"\n')
    with pytest.raises(UserError, match=r"bad.toml, \[compare\]: .*metric"):
        profiles.load(str(bad))
    bad.write_text('[[train]]\nmodel = "mlp"\nlearning_rate = 0.1\n')
    with pytest.raises(UserError, match="learning_rate"):
        profiles.load(str(bad))


@pytest.mark.parametrize(
    "body, message",
    [
        ('[[train]]\nmodel = "mlp"\nseeds = [1, 1]\n', "seeds repeat a seed"),
        ('[[train]]\nmodel = "mlp"\nseed = 3\nseeds = [1]\n', "not seed"),
        ('[[train]]\nmodel = "mlp"\nsplit_seed = 7\n', "split_seed belong in \\[prepare\\]"),
        ('[[tune]]\nmodel = "mlp"\ndataset = "abcdef12"\n', "dataset belong in"),
        ('[[tune]]\nmodel = "mlp"\n\n[[tune]]\nmodel = "mlp"\n', "listed twice"),
        # the default written out is the same job
        ('[[train]]\nmodel = "mlp"\n\n[[train]]\nmodel = "mlp"\nbatch_size = 128\n', "twice"),
        (
            '[[train]]\nmodel = "mlp"\nresume = "0123456789abcdef0123456789abcdef"\n',
            "resume continues one run",
        ),
        ('[train]\nmodel = "mlp"\n', "train must be a list of tables, \\[\\[train\\]\\]"),
        ("train = 5\n", "train must be a list of tables"),
        ("[[prepare]]\nsplit_seed = 1\n", "prepare must be a table"),
        ("description = 3\n", "description must be a string"),
        # a list where one value goes was read as its only item
        ('[[train]]\nmodel = "mlp"\nseeds = [[1], [2]]\n', "seed takes one value.*\\[1\\]"),
        ('[[train]]\nmodel = "mlp"\nbatch_size = [64]\n', "batch_size takes one value"),
    ],
)
def test_a_profile_that_main_would_quietly_change_is_refused(tmp_path, body, message):
    """main gives every job the prepared data (a split setting in a job was replaced), and a
    job listed twice trained twice."""
    bad = tmp_path / "bad.toml"
    bad.write_text(body)
    with pytest.raises(UserError, match=message):
        profiles.load(str(bad))


def test_main_refuses_a_profile_model_option_before_any_run(tmp_path):
    from pipeline.steps import main

    bad = tmp_path / "bad.toml"
    for body, message in [
        ('[[train]]\nmodel = "mlp"\noptions = {blocks = 4}\n', "unknown option 'blocks'"),
        ('[[tune]]\nmodel = "fastnet"\noptions = {widths = [1]}\n', "2 to 5 blocks"),
        # train refuses it once the data is loaded: after prepare, and on Ray after retries
        ('[[train]]\nmodel = "logreg"\nepochs = 3\n', "scikit-learn baseline.*no epochs"),
    ]:
        bad.write_text(body)
        with pytest.raises(UserError, match=f"bad.toml, \\[\\[.*{message}"):
            main.check_models(profiles.load(str(bad)))


def test_main_refuses_a_device_its_executor_cannot_give_before_any_run(
    stores, tmp_path, monkeypatch
):
    """It ran prepare and every other job first, then failed that job's child run."""
    import torch

    from pipeline import executors
    from pipeline.steps import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU machine
    bad = tmp_path / "bad.toml"
    bad.write_text('[[train]]\nmodel = "mlp"\n\n[[tune]]\nmodel = "mlp"\ndevice = "cuda"\n')
    settings = config.MainSettings.from_params({"profile": str(bad)})
    with pytest.raises(UserError, match=r"bad.toml, \[\[tune\]\]: device=cuda but no CUDA GPU"):
        main.main(settings)
    assert not (Path(stores["FMB_MLRUNS_DIR"]) / "mlflow.db").exists()  # before any run
    ray = object.__new__(executors.Ray)  # the cluster's GPUs decide, not this machine's
    ray.gpus = 0.0
    with pytest.raises(ValueError, match="the Ray cluster offers no GPU"):
        ray.check_device("cuda")
    ray.gpus = 2.0
    ray.check_device("cuda")
    for name in ("auto", "cpu"):
        executors.Local(settings).check_device(name)


def test_an_env_manager_that_is_not_installed_is_refused_up_front(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no uv, pyenv or conda here
    monkeypatch.delenv("MLFLOW_CONDA_HOME", raising=False)
    for manager, tool in [("uv", "uv"), ("virtualenv", "pyenv"), ("conda", "conda")]:
        with pytest.raises(UserError, match=f"env_manager={manager} needs {tool}"):
            config.MainSettings.from_params({"env_manager": manager})
    config.MainSettings.from_params({"env_manager": "uv", "executor": "ray"})  # not used there
    (tmp_path / "uv").write_text("#!/bin/sh\n")
    (tmp_path / "uv").chmod(0o755)
    config.MainSettings.from_params({"env_manager": "uv"})


# --- a configuration's identity --------------------------------------------------------------


def key(**params) -> str:
    return identity.config_key(config.TrainSettings.from_params(params))


def test_spelled_out_defaults_give_the_same_key():
    assert key(model="mini_resnet") == key(model="mini_resnet", options="blocks=3")
    assert key(model="mini_resnet") == key(model="mini_resnet", options="blocks=3,width=64")
    assert key(model="mini_resnet") != key(model="mini_resnet", options="blocks=4")
    assert key(model="cnn2", options="filters=[32,64]") == key(model="cnn2")


def test_execution_settings_do_not_change_the_key():
    base = key(model="lenet5")
    for extra in ({"seed": 7}, {"device": "cpu"}, {"compile": "false"}, {"deterministic": True}):
        assert key(model="lenet5", **extra) == base, extra
    assert key(model="random_forest", options="n_jobs=1") == key(model="random_forest")
    assert key(model="lenet5", lr=0.01) != base


# a value other than the default for every setting of the configuration key
OTHER = {"model": "mlp", "options": "batchnorm=true", "epochs": "3", "batch_size": "64"}
OTHER |= {"optimizer": "sgd", "lr": "0.01", "weight_decay": "0.1", "loss": "nll", "flip": "true"}
OTHER |= {"augment": "shift", "schedule": "onecycle", "label_smoothing": "0.1", "dropout": "0.3"}
OTHER |= {"patience": "2", "restore_best": "false", "subset": "500"}


def test_each_setting_of_the_key_shows_in_the_label():
    """One label per configuration: two differing only in patience or restore_best had the
    same leaderboard label."""
    assert set(OTHER) == {leaf.name for leaf in config.TrainSettings.leaves() if leaf.identity}
    base = cli.parse("train", ["--model", "cnn2"])
    for name, value in OTHER.items():
        argv = ["--model", "cnn2", f"--{name}", value] if name != "model" else ["--model", value]
        other = cli.parse("train", argv)
        assert identity.config_key(other) != identity.config_key(base), name
        assert identity.label(other) != identity.label(base), name


def test_a_baseline_ignores_training_settings_it_does_not_use():
    assert key(model="logreg", epochs=3, optimizer="sgd") == key(model="logreg")
    assert key(model="svc") == key(model="svc", subset=10_000)  # its documented default subset


def test_a_baseline_given_a_torch_setting_is_refused_not_ignored():
    """train checks it (fit.prepare) before any data is loaded or any run starts."""
    given = config.TrainSettings.from_params({"model": "logreg", "dropout": "0.5", "epochs": "3"})
    with pytest.raises(UserError, match=r"logreg is a scikit-learn baseline.*no epochs, dropout"):
        given.check_baseline()
    # every setting spelled out at its default, as `mlflow run` passes them, is fine
    defaults = config.TrainSettings().params() | {"model": "logreg", "subset": "300"}
    config.TrainSettings.from_params(defaults).check_baseline()
    config.TrainSettings.from_params({"model": "lenet5", "dropout": "0.5"}).check_baseline()


def test_the_command_reproduces_the_settings():
    settings = config.TrainSettings.from_params(
        {"model": "cnn2", "options": "filters=[32,64],dense=[64]", "flip": True, "lr": 0.003}
    )
    argv = shlex.split(identity.command(settings))
    assert argv[:4] == ["python", "-m", "pipeline", "train"]
    assert cli.parse("train", argv[4:]) == settings


def test_every_reproduced_reference_is_a_configuration_of_the_reports_profile():
    from pipeline import leaderboard

    keys = {identity.config_key(job.settings) for job in profiles.load("reports").train}
    refs = leaderboard.REFERENCES
    reproduced = refs[refs["reproduced_by"] != ""]
    assert len(reproduced) >= 20
    for _, row in reproduced.iterrows():
        settings = config.TrainSettings.from_params(json.loads(row["reproduced_by"]))
        assert identity.config_key(settings) in keys, (row["source"], row["setting"])
        assert row["registry_model"] == settings.model
        assert "setting" in row["validity"] or "invalid" in row["validity"], row["validity"]


def test_no_step_is_the_usage_and_one_error_line(capsys):
    from pipeline.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main([])
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    assert err.splitlines()[0].startswith("usage: python -m pipeline {prepare,")
    assert (
        err.splitlines()[1].startswith("error: name a step: prepare, train")
        and err.count("\n") == 2
    )
    assert main(["--help"]) == 0 and capsys.readouterr().out.startswith("usage:")
