"""The engine (losses, optimizers, early stopping, checkpoints) and the train step."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import mlflow_run, run_step

from pipeline import config, data, engine
from pipeline.data import Split

# --- losses and optimizers against torch's own ------------------------------------------


@pytest.fixture
def logits_targets():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g)


def test_ce_matches_torch(logits_targets):
    logits, y = logits_targets
    reference = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, y)
    assert torch.allclose(engine.make_loss("ce", 0.1)(logits, y), reference)
    manual = -torch.log_softmax(logits, 1)[torch.arange(16), y].mean()
    assert torch.allclose(engine.make_loss("ce")(logits, y), manual, atol=1e-6)


def test_nll_is_on_log_softmax_outputs(logits_targets):
    logits, y = logits_targets
    reference = torch.nn.NLLLoss()(torch.nn.LogSoftmax(dim=1)(logits), y)
    assert torch.allclose(engine.make_loss("nll")(logits, y), reference)


def test_mse_is_softmax_against_one_hot(logits_targets):
    logits, y = logits_targets
    one_hot = torch.zeros(16, 10).scatter_(1, y[:, None], 1.0)
    reference = torch.nn.MSELoss()(torch.softmax(logits, 1), one_hot)
    assert torch.allclose(engine.make_loss("mse")(logits, y), reference)


@pytest.mark.parametrize(
    "name, cls",
    [
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
        ("sgd", torch.optim.SGD),
        ("rmsprop", torch.optim.RMSprop),
    ],
)
def test_optimizers(name, cls):
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = engine.make_optimizer(name, params, 0.01, 1e-4)
    assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.01
    assert opt.param_groups[0]["weight_decay"] == 1e-4


@pytest.mark.parametrize("name", config.SCHEDULES)
def test_schedules_step_per_batch(name):
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = engine.make_optimizer("sgd", params, 0.1, 0)
    scheduler = engine.make_scheduler(name, opt, 0.1, total_steps=10)
    lrs = []
    for _ in range(10):
        opt.step()
        if scheduler:
            scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    if name == "none":
        assert lrs == [0.1] * 10
    else:
        assert lrs[-1] < 0.05  # all anneal towards zero by the end


@pytest.mark.parametrize("name", ["linear", "onecycle"])
def test_the_trainer_steps_its_schedule_once_per_batch(name):
    """200 images in batches of 32: 7 steps an epoch; each epoch's logged lr is the lr after
    its last step, what the same scheduler stepped by hand gives."""
    t = trainer(replace(BASE, epochs=3, schedule=name, augment=(), flip=False))
    result = t.fit()
    opt = engine.make_optimizer("adam", [torch.nn.Parameter(torch.zeros(3))], BASE.lr, 0)
    scheduler = engine.make_scheduler(name, opt, BASE.lr, total_steps=3 * 7)
    expected = []
    for _ in range(3):
        for _ in range(7):
            opt.step()
            scheduler.step()
        expected.append(opt.param_groups[0]["lr"])
    assert result.history["lr"] == pytest.approx(expected)
    assert len(set(result.history["lr"])) == 3  # it moved within the run


def test_linear_schedule_warms_up_then_decays_to_zero():
    """20% of the steps ramp up to the peak, then a straight line down to 0."""
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = engine.make_optimizer("sgd", params, 0.1, 0)
    scheduler = engine.make_scheduler("linear", opt, 0.1, total_steps=10)
    used = []  # the lr each optimizer step runs with
    for _ in range(10):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert used == pytest.approx(
        [0.05, 0.1, 0.1, 0.0875, 0.075, 0.0625, 0.05, 0.0375, 0.025, 0.0125]
    )
    assert opt.param_groups[0]["lr"] == 0.0  # after the last step
    # per-batch: a long run warms up over its first fifth
    factors = [engine.linear_factor(s, 1000) for s in range(1000)]
    assert int(np.argmax(factors)) == 199 and factors[0] == pytest.approx(1 / 200)
    assert all(a >= b for a, b in zip(factors[199:], factors[200:], strict=False))


# --- the training loop on tiny synthetic data ------------------------------------------


def tiny_splits(n=200, seed=0):
    from conftest import synthetic

    images, labels = synthetic(n // 10, seed)
    return Split(images[:, None], labels.astype(np.int64))


def trainer(cfg, ckpt=None, on_epoch_end=None):
    engine.seed_everything(cfg.seed, True)
    from pipeline import models

    model = models.build_model(cfg.model)
    device = torch.device("cpu")
    return engine.Trainer(
        model,
        engine.DeviceSplit.from_split(tiny_splits(200, 0), device),
        engine.DeviceSplit.from_split(tiny_splits(100, 1), device),
        cfg,
        device,
        ckpt,
        on_epoch_end=on_epoch_end,
        progress=False,
    )


BASE = config.TrainSettings(
    model="cnn2",
    epochs=4,
    batch_size=32,
    lr=3e-3,
    flip=True,
    augment=("rotate", "shift"),
    seed=3,
    deterministic=True,
)


def test_a_last_batch_of_one_image_is_left_out_so_batchnorm_trains():
    """cnn2 with batchnorm on 201 images at batch size 50 ended its first epoch with a
    batch of one image: "Expected more than 1 value per channel when training"."""
    assert engine.batch_starts(201, 50) == range(0, 200, 50)
    assert engine.batch_starts(200, 50) == range(0, 200, 50)
    assert engine.batch_starts(202, 50) == range(0, 202, 50)  # a last batch of two trains
    assert engine.batch_starts(1, 50) == range(0, 1, 50)  # never all of them
    engine.seed_everything(0, True)
    from pipeline import models

    device = torch.device("cpu")
    from conftest import synthetic

    images, labels = synthetic(21, 0)  # 210 images: 209 are 4 batches of 52 and one image
    run = engine.Trainer(
        models.build_model("cnn2", batchnorm=True),
        engine.DeviceSplit.from_split(
            Split(images[:209, None], labels[:209].astype(np.int64)), device
        ),
        engine.DeviceSplit.from_split(tiny_splits(100, 1), device),
        replace(BASE, batch_size=52, epochs=2, augment=()),
        device,
        progress=False,
    )
    assert run.steps_per_epoch == 4
    loss, accuracy, _ = run.train_epoch()
    assert np.isfinite(loss) and 0 <= accuracy <= 1


def test_training_learns_the_synthetic_task():
    result = trainer(replace(BASE, epochs=3)).fit()
    assert result.best_val_accuracy > 0.5  # chance is 0.1
    assert set(result.history) == {
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "epoch_time_s",
        "train_images_per_s",
    }


def test_early_stopping_restores_the_best_weights(monkeypatch):
    # validation accuracy peaks at epoch 2 (scripted: real accuracy on this easy task rises
    # every epoch, so neither the stop nor the restore would ever happen)
    scripted = iter([0.5, 0.9, 0.6, 0.7, 0.95, 0.95])
    monkeypatch.setattr(engine, "evaluate_split", lambda *args: (1.0, next(scripted)))
    snapshots = {}
    t = trainer(replace(BASE, epochs=6, patience=2, lr=0.05, optimizer="sgd"))
    t.on_epoch_end = lambda e, m: snapshots.__setitem__(
        e, {k: v.clone() for k, v in t.model.state_dict().items()}
    )
    result = t.fit()
    assert result.history["val_accuracy"] == [0.5, 0.9, 0.6, 0.7]  # 2 worse epochs: stop
    assert result.epochs_run == 4 and result.best_epoch == 2 and result.best_val_accuracy == 0.9
    final = t.model.state_dict()
    assert all(torch.equal(final[k], snapshots[2][k]) for k in final)  # the best restored
    assert not all(torch.equal(final[k], snapshots[4][k]) for k in final)


def test_restore_best_false_ends_with_the_last_epochs_weights():
    """Report 004 measured end-of-training accuracy: restore_best=false keeps the last epoch."""
    snapshots = {}
    t = trainer(replace(BASE, epochs=4, patience=4, lr=0.05, optimizer="sgd", restore_best=False))
    t.on_epoch_end = lambda e, m: snapshots.__setitem__(
        e, {k: v.clone() for k, v in t.model.state_dict().items()}
    )
    result = t.fit()
    final = t.model.state_dict()
    assert result.epochs_run == 4
    assert all(torch.equal(final[k], snapshots[4][k]) for k in final)


def test_resume_matches_an_uninterrupted_run(tmp_path):
    straight = trainer(BASE, tmp_path / "a.pt")
    expected = straight.fit()

    def stop_after_two(epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt

    first = trainer(BASE, tmp_path / "b.pt", on_epoch_end=stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    resumed = trainer(BASE, tmp_path / "b.pt")
    resumed.load_checkpoint(tmp_path / "b.pt")
    assert resumed.state.epoch == 2
    got = resumed.fit()
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert got.history[key] == expected.history[key], key
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_checkpoints_load_with_weights_only(tmp_path):
    t = trainer(replace(BASE, epochs=1), tmp_path / "c.pt")
    t.fit()
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 1 and "augmenter" in ckpt and "optimizer" in ckpt
    assert not list(tmp_path.glob(".*.tmp")), "temp checkpoint left behind"


def test_non_finite_loss_stops_with_a_clear_message():
    t = trainer(replace(BASE, epochs=1))
    t.loss_fn = lambda logits, y: (logits * float("nan")).sum()
    with pytest.raises(engine.NonFiniteLoss, match="lower lr"):
        t.fit()


@pytest.mark.parametrize("name", config.SKLEARN_MODEL_NAMES)
def test_every_baseline_reports_its_size(name):
    from pipeline import models
    from pipeline.fit import sklearn_size

    split = tiny_splits(200, 0)
    estimator = models.build_baseline(name, seed=0)
    estimator.fit(split.images.astype(np.float32), split.labels)
    assert sklearn_size(estimator) > 0


# --- the step in-process: prepare-on-demand and the test split --------------------------


@pytest.fixture
def tiny_digest(tiny_idx_dir, stores):
    from pipeline.preparation import prepare

    _, _, manifest, _ = prepare(
        config.PrepareSettings(source=str(tiny_idx_dir), allow_unofficial=True)
    )
    return manifest["digest"]


def test_train_never_opens_the_test_split(tiny_digest, stores, monkeypatch):
    import mlflow

    from pipeline import fit

    def forbidden(*args, **kwargs):
        raise AssertionError("train opened the test split")

    monkeypatch.setattr(data, "load_test_split", forbidden)
    monkeypatch.setattr(np, "load", _guard_np_load(np.load))
    cfg = config.TrainSettings(model="mlp", epochs=1, dataset=tiny_digest, batch_size=64)
    run_id, summary = fit.run(fit.prepare(cfg))
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and summary["epochs_run"] == 1
    assert run.data.tags["dataset.digest"] == tiny_digest
    assert run.data.tags["precision"] == engine.resolve_precision(
        "auto", torch.device("cpu"), "mlp"
    )


@pytest.mark.reliability
def test_a_diverged_run_keeps_no_checkpoint_and_is_not_offered_a_resume(
    tiny_digest, stores, monkeypatch
):
    """A resume keeps lr, so a run whose loss became NaN would diverge again: its checkpoint
    was kept (and evaluate offered `--resume`), as were the temp files of a write that a
    kill had cut short."""
    import mlflow

    from pipeline import evaluation, fit
    from pipeline.errors import UserError

    original = engine.Trainer.train_epoch

    def diverge_in_epoch_2(self):
        if self.state.epoch == 1:  # epoch 1 is checkpointed by now
            raise engine.NonFiniteLoss("training loss became nan in epoch 2; lower lr")
        return original(self)

    monkeypatch.setattr(engine.Trainer, "train_epoch", diverge_in_epoch_2)
    cfg = config.TrainSettings(model="mlp", epochs=3, dataset=tiny_digest, batch_size=64)
    started = []
    monkeypatch.setattr(
        engine.Trainer, "save_checkpoint", _noting(engine.Trainer.save_checkpoint, started)
    )
    with pytest.raises(UserError, match="lower lr"):
        fit.run(fit.prepare(cfg))
    (checkpoint,) = started  # the path epoch 1 was saved to, and a cut-short write beside it
    assert not checkpoint.exists()
    assert not list(checkpoint.parent.glob(f".{checkpoint.name}.*.tmp"))
    run_id = checkpoint.stem
    assert mlflow.MlflowClient().get_run(run_id).info.status == "FAILED"
    with pytest.raises(UserError) as refused:
        evaluation.check(run_id)
    assert "resume" not in str(refused.value)


def _noting(save, paths: list):
    """save_checkpoint that notes its path and leaves a killed write's temp file beside it."""

    def noted(self):
        save(self)
        paths.append(self.checkpoint_path)
        self.checkpoint_path.with_name(f".{self.checkpoint_path.name}.99999.tmp").write_bytes(b"x")

    return noted


def _guard_np_load(original):
    def guarded(path, *args, **kwargs):
        if str(path).endswith("test.npz"):
            raise AssertionError(f"train read {path}")
        return original(path, *args, **kwargs)

    return guarded


# --- the step as users run it -----------------------------------------------------------


BAD = [
    (["--model", "nope"], "model"),
    (["--lr", "-1"], "lr"),
    (["--lr", "nan"], "lr"),
    (["--epochs", "0"], "epochs"),
    (["--batch_size", "0"], "batch_size"),
    (["--optimizer", "foo"], "optimizer"),
    (["--loss", "bar"], "loss"),
    (["--augment", "twist"], "augment"),
    (["--flip", "maybe"], "flip"),
    (["--options", "blocks=0", "--model", "mini_resnet"], "blocks"),
    (["--label_smoothing", "0.1", "--loss", "mse"], "label_smoothing"),
]
if not torch.cuda.is_available():
    BAD.append((["--device", "cuda"], "CUDA"))


@pytest.mark.parametrize("args, word", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_train_parameters(args, word, stores):
    result = run_step(["train", *args], stores, timeout=120)
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert word in result.stderr and "Traceback" not in result.stderr
    import mlflow  # no run may be left RUNNING: the bad values never reach a run

    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    exp = mlflow.get_experiment_by_name("fashion-mnist")
    if exp is not None:
        assert mlflow.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'").empty


CONTRACT_EPOCH_KEYS = {
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "epoch_time_s",
    "train_images_per_s",
}
CONTRACT_END_KEYS = {"best_val_accuracy", "n_params", "train_time_s"}


def check_logged_model(run, images: np.ndarray):
    import mlflow

    model = mlflow.pyfunc.load_model(run.data.tags["model.uri"])
    for n in (1, 7):
        proba = np.asarray(model.predict(images[:n].astype(np.float32)))
        assert proba.shape == (n, 10)
        assert np.allclose(proba.sum(1), 1, atol=1e-4) and (proba >= 0).all()
    return model


@pytest.mark.parametrize(("name", "options"), [("fastnet", {"widths": [8, 8, 16]}), ("mlp", {})])
def test_a_logged_torch_model_predicts_any_batch_size(name, options, stores):
    """As a consumer loads it (pyfunc, torch.export's pt2 with a dynamic batch size): fastnet's
    flip TTA split its batch with chunk(2), whose guard divided by zero for N=0."""
    import mlflow

    from pipeline import models, tracking

    torch.manual_seed(0)
    module = models.build_model(name, **options).eval()
    images = np.random.default_rng(0).integers(0, 256, (9, 1, 28, 28)).astype(np.float32)
    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    try:
        with mlflow.start_run():
            uri, _ = tracking.log_torch_model(module, images, {}, name)
        model = mlflow.pyfunc.load_model(uri)
        for n in (0, 1, 9):
            proba = np.asarray(model.predict(images[:n]))
            assert proba.shape == (n, 10)
            with torch.no_grad():
                expected = torch.softmax(module(torch.from_numpy(images[:n])), 1).numpy()
            np.testing.assert_allclose(proba, expected, rtol=1e-4, atol=1e-6)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize(
    "model, params",
    [
        ("lenet5", {"epochs": 1, "subset": 2000, "batch_size": 64}),
    ],
)
def test_train_through_mlflow_run(model, params, real_prepared, tmp_path, stores, monkeypatch):
    import mlflow

    monkeypatch.setenv("FMB_DATA_DIR", str(real_prepared))
    env = {**stores, "FMB_DATA_DIR": str(real_prepared)}
    result = mlflow_run("train", {"model": model, **params}, env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    (run,) = mlflow.search_runs(experiment_names=["fashion-mnist"], output_format="list")
    assert run.info.status == "FINISHED"
    assert run.data.tags["pipeline.step"] == "train" and run.data.tags["model"] == model
    assert set(run.data.metrics) >= CONTRACT_EPOCH_KEYS | CONTRACT_END_KEYS
    if model == "lenet5":
        assert run.data.metrics["n_params"] == 136_586 and "lr" in run.data.metrics
        assert run.data.metrics["compile_time_s"] == 0.0  # eager: nothing compiled
        if run.data.tags["device"] == "cpu":  # a GPU warms up, a CPU does not
            assert run.data.metrics["warmup_time_s"] == 0.0
        artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
        assert {"config.json", "learning_curves.png", "model_summary.txt"} <= artifacts
    split = data.load_split(data.find_cache(run.data.tags["dataset.digest"]), "val")
    check_logged_model(run, split.images)
    assert not list((tmp_path / "mlruns" / "checkpoints").glob("*.pt"))


# --- torch.compile and fp32 prediction ---------------------------------------------------


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile unavailable")
def test_compiled_trainer_fits_and_keeps_plain_state_dict_keys(tmp_path):
    """One epoch through torch.compile (10-30 s of compiling on 2 CPU cores, less with a
    warm compile cache): the checkpoint and state_dict keys are the plain module's, compile
    time is reported apart and the warm-up leaves weights and BatchNorm statistics alone."""
    from pipeline import models

    cfg = replace(BASE, model="fastnet", epochs=1, batch_size=50, augment=())
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = models.build_model("fastnet", widths=(8, 16))

    def compiled_trainer(checkpoint=None):
        return engine.Trainer(
            model,
            engine.DeviceSplit.from_split(tiny_splits(200, 0), device),  # 4 batches of 50
            engine.DeviceSplit.from_split(tiny_splits(100, 1), device),
            cfg,
            device,
            checkpoint,
            progress=False,
            compile=True,
        )

    from torch._dynamo.utils import counters  # frames compiled, this process

    t = compiled_trainer(tmp_path / "c.pt")
    warm_up, compiled = t.warm_up, []

    def counted_warm_up() -> float:
        seconds = warm_up()
        compiled.append(counters["frames"]["ok"])
        return seconds

    t.warm_up = counted_warm_up
    result = t.fit()
    assert result.epochs_run == 1 and result.compile_time_s > 0
    # no compile time in the epoch clock: the warm-up compiled every graph the epoch and its
    # validation ran (none compiled later), and the clock starts after it (train_epoch)
    assert compiled and compiled[0] > 0 and counters["frames"]["ok"] == compiled[0]
    assert np.isfinite(result.history["train_loss"][0])
    plain_keys = set(models.build_model("fastnet", widths=(8, 16)).state_dict())
    assert set(t.model.state_dict()) == plain_keys
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    assert set(ckpt["model"]) == plain_keys and not any("_orig_mod" in k for k in ckpt["model"])

    again = compiled_trainer()  # a second warm-up, on trained weights
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert again.warm_up() > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_eager_warm_up_a_gpu_gets_leaves_no_trace_in_training():
    # On CUDA an eager Trainer warms up (cuDNN autotuning) before its first timed epoch.
    # Forced here on the CPU: with the warm-up or without, training must be the same, so
    # the warm-up restores the weights, BatchNorm statistics, RNGs and augmenter stream.
    cfg = replace(BASE, epochs=1, augment=("shift", "erase"))
    plain = trainer(cfg)
    a = plain.fit()
    warmed = trainer(cfg)  # seeds the global RNG afresh, as the first did
    warmed._warm = False  # what a CUDA device sets
    assert warmed.warm_up() > 0 and warmed.compile_time_s == 0.0
    b = warmed.fit()
    assert b.warmup_time_s > 0 and a.warmup_time_s == 0.0 and b.compile_time_s == 0.0
    assert a.history["train_loss"] == b.history["train_loss"]
    assert all(
        torch.equal(v, warmed.model.state_dict()[k]) for k, v in plain.model.state_dict().items()
    )


def test_uncompiled_trainer_reports_no_compile_time():
    result = trainer(replace(BASE, epochs=1)).fit()
    assert result.compile_time_s == 0.0


@pytest.mark.parametrize(
    ("mode", "device", "name", "expected"),
    [
        (True, "cpu", "cnn2", True),
        ("false", "cpu", "fastnet", False),
        ("true", "cuda", "lenet5", True),
        ("auto", "cuda", "fastnet", False),  # measured on an H200: slower compiled
        ("auto", "mps", "fastnet", False),  # never measured on MPS: no compile
        ("auto", "cpu", "no_such_model", False),
    ],
)
def test_resolve_compile(mode, device, name, expected):
    assert engine.resolve_compile(mode, torch.device(device), name) is expected


def test_resolve_compile_follows_the_table():
    for kind, table in engine.COMPILE_TABLE.items():
        for name, entry in table.items():
            want = entry["verdict"] == "compile"
            assert engine.resolve_compile("auto", torch.device(kind), name) is want
    assert engine.compile_verdict("cuda", "fastnet") == "eager"
    assert engine.compile_verdict("mps", "fastnet") == "unmeasured"
    assert engine.compile_verdict("cuda", "no_such_model") == "unmeasured"
    with pytest.raises(ValueError, match="auto, true or false"):
        engine.resolve_compile("sometimes", torch.device("cpu"), "cnn2")


def _native_bf16(monkeypatch, native: bool) -> None:
    """Make CPUs and GPUs alike compute bf16 natively (or not), whatever this machine has."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)


@pytest.mark.parametrize(
    ("mode", "native", "model", "expected"),
    [
        ("bf16", False, "lenet5", "bf16"),
        ("fp32", True, "lenet5", "fp32"),
        ("auto", True, "lenet5", "bf16"),
        ("auto", False, "lenet5", "fp32"),
        ("auto", True, "mlp", "fp32"),  # measured slower in bf16 on this project's CPU
        ("bf16", True, "mlp", "bf16"),  # asked for, so given
        ("auto", True, "no_such_model", "bf16"),  # never measured: the device decides
    ],
)
def test_resolve_precision_on_cpu(monkeypatch, mode, native, model, expected):
    """auto = bf16 where the CPU has bf16 units (torch's own probes), unless the measured
    table says bf16 is slower for that model there."""
    _native_bf16(monkeypatch, native)
    assert engine.resolve_precision(mode, torch.device("cpu"), model) == expected


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_resolve_precision_on_cuda_ignores_emulated_bf16(monkeypatch, native, expected):
    """A GPU that only emulates bf16 (torch's default answer counts it) trains in fp32."""

    def supported(including_emulation=True):
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert engine.resolve_precision("auto", torch.device("cuda"), "resnet18") == expected


def test_resolve_precision_follows_the_measured_table(monkeypatch):
    """Where bf16 is native, auto = fp32 exactly for the models measured slower in bf16 on
    that kind of device (on the H200 every model measured: its steps are launch-bound)."""
    _native_bf16(monkeypatch, True)
    for kind, table in engine.BF16_SPEEDUP.items():
        for name, speedup in table.items():
            want = "bf16" if speedup >= 1 else "fp32"
            assert engine.resolve_precision("auto", torch.device(kind), name) == want, name
    assert engine.resolve_precision("auto", torch.device("cuda"), "fastnet") == "fp32"
    assert engine.resolve_precision("auto", torch.device("cpu"), "fastnet") == "bf16"


def test_resolve_precision_rejects_unknown_modes_and_unprobed_devices():
    with pytest.raises(ValueError, match="auto, bf16 or fp32"):
        engine.resolve_precision("fp16", torch.device("cpu"), "lenet5")
    assert engine.resolve_precision("auto", torch.device("mps"), "lenet5") == "fp32"


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_training_passes_run_in_the_chosen_precision(precision):
    """bf16 autocasts the training forward passes only: the weights stay fp32 and
    validation (predict_logits) runs in fp32."""
    t = trainer(replace(BASE, epochs=1, precision=precision))
    seen: dict[bool, set] = {True: set(), False: set()}  # training mode -> conv output dtypes
    conv = next(m for m in t.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, out: seen[m.training].add(out.dtype))
    assert t.precision == precision
    t.fit()
    assert seen[True] == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert seen[False] == {torch.float32}
    assert {p.dtype for p in t.model.parameters()} == {torch.float32}


def test_predictions_are_fp32_without_autocast(monkeypatch):
    """Validation scores the model as the logged fp32 model runs: no autocast anywhere."""

    def forbidden(*args):
        raise AssertionError("predict_logits entered autocast")

    monkeypatch.setattr(engine, "autocast", forbidden)
    from pipeline import models

    model = models.build_model("fastnet", widths=(8, 16))
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    logits = engine.predict_logits(model, images, channels_last=True)
    assert logits.dtype == torch.float32 and logits.shape == (5, 10)
    assert not model.training


def test_a_baselines_logged_model_lists_only_the_settings_it_used():
    """The Models tab shows a logged model's params: a logreg model read epochs=10,
    optimizer=adam, lr=0.001 (torch defaults it never used) beside an mlp's real ones."""
    from pipeline import fit
    from pipeline.config import TORCH_ONLY, TrainSettings

    logreg = fit.model_params(TrainSettings(model="logreg", subset=300, seed=1))
    assert not set(TORCH_ONLY) & set(logreg)
    assert logreg["model"] == "logreg" and logreg["subset"] == "300" and logreg["seed"] == "1"
    mlp = TrainSettings(model="mlp", epochs=1)
    assert fit.model_params(mlp) == mlp.params()
