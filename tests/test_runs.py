"""Run folders: exact resume after SIGKILL, divergence and stuck reports, the CLI end to end, and bad input."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import xpnn
from xpnn import cli, runs
from xpnn.callbacks import StuckDetector
from xpnn.reference import reference_model, reference_optimizer
from xpnn.train import Callback, History, TrainState

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--embedded", "--n-train", "48", "--n-test", "12", "--batch-size", "16", "--epochs", "3", "--no-plot"]


@pytest.fixture(scope="module")
def data():
    return xpnn.datasets.load_embedded(n_train=48, n_test=12)


def xpnn_cmd(*args: str, kill: str | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """`python -m xpnn.cli ...` on this checkout's code, optionally with the SIGKILL test hook set."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XPNN_BACKEND": "numpy"}
    env.pop(runs.KILL_ENV, None)
    if kill:
        env[runs.KILL_ENV] = kill
    return subprocess.Popen(
        [sys.executable, "-m", "xpnn.cli", *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out.decode(), err.decode()


def only_run(root: Path) -> Path:
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    return folder


def last_event(folder: Path) -> str:
    return (folder / "events.log").read_text().strip().splitlines()[-1]


def final_state(folder: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """Weights, Adam moments and per-epoch losses of a finished run."""
    model = xpnn.load_model(folder / "model.h5")
    losses = [row["loss"] for row in runs.read_history_csv(folder / "history.csv")]
    return model.get_weights(), model.optimizer.m + model.optimizer.v, losses


def assert_bit_identical(a: Path, b: Path) -> None:
    wa, ma, la = final_state(a)
    wb, mb, lb = final_state(b)
    assert len(wa) == len(wb) and all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(wa, wb))
    assert all(x.tobytes() == y.tobytes() for x, y in zip(ma, mb))
    assert la == lb


# ---- exact resume --------------------------------------------------------------------------------------
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    """Kill points: mid epoch 1 (step 2), inside the epoch-2 checkpoint write, inside the very first checkpoint
    write (no checkpoint at all), mid epoch 2 (step 5), and an outside SIGKILL as epoch 3 starts."""
    code, out, err = finish(xpnn_cmd("train", *TRAIN, "-q", "--run-dir", str(tmp_path / "whole")))
    assert code == 0, err
    whole = only_run(tmp_path / "whole")

    # chain A: step 2 -> the checkpoint after epoch 2 (killed before its rename) -> to the end
    code, _, err = finish(xpnn_cmd("train", *TRAIN, "-q", "--run-dir", str(tmp_path / "a"), kill="step:2"))
    assert code == -signal.SIGKILL, err
    a = only_run(tmp_path / "a")
    assert not (a / "model.h5").exists()
    code, _, err = finish(xpnn_cmd("train", "--resume", str(a), "-q", kill="checkpoint:2"))
    assert code == -signal.SIGKILL, err
    assert last_event(a).endswith("resumed from the checkpoint after epoch 0 (step 0)")
    assert list(a.glob(".checkpoint.h5.*.tmp"))  # the new checkpoint was never renamed into place
    code, _, err = finish(xpnn_cmd("train", "--resume", str(a), "-q"))
    assert code == 0, err
    assert "resumed from the checkpoint after epoch 1 (step 3)" in (a / "events.log").read_text()
    assert not list(a.glob(".*.tmp"))
    assert_bit_identical(whole, a)

    # chain B: the first checkpoint write -> step 5 -> SIGKILL from outside after the "epoch 2/3" line
    code, _, err = finish(xpnn_cmd("train", *TRAIN, "-q", "--run-dir", str(tmp_path / "b"), kill="checkpoint:0"))
    assert code == -signal.SIGKILL, err
    b = only_run(tmp_path / "b")
    assert not (b / "checkpoint.h5").exists() and (b / "config.json").exists()
    code, _, err = finish(xpnn_cmd("train", "--resume", str(b), "-q", kill="step:5"))
    assert code == -signal.SIGKILL, err
    proc = xpnn_cmd("train", "--resume", str(b))
    for line in proc.stdout:
        if line.startswith(b"epoch 2/3"):
            proc.send_signal(signal.SIGKILL)
            break
    code, _, err = finish(proc)
    assert code == -signal.SIGKILL, err
    assert json.loads((b / "status.json").read_text())["epoch"] == 2
    assert last_event(b).endswith("resumed from the checkpoint after epoch 1 (step 3)")
    code, _, err = finish(xpnn_cmd("train", "--resume", str(b), "-q"))
    assert code == 0, err
    assert "resumed from the checkpoint after epoch 2 (step 6)" in (b / "events.log").read_text()
    assert_bit_identical(whole, b)


class Interrupt(Callback):
    """Stops the process's training at one step, as Ctrl-C would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, model, state, batch):
        if state.step == self.step:
            raise KeyboardInterrupt


def test_library_resume_matches_an_uninterrupted_fit(tmp_path, data):
    (x, y), (xt, yt) = data
    kwargs = {"epochs": 3, "batch_size": 16, "seed": 4, "validation_data": (xt, yt), "verbose": 0}
    whole = reference_model(seed=2)
    whole.fit(x, y, optimizer=reference_optimizer(), run_dir=tmp_path / "w", **kwargs)
    model = reference_model(seed=2)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, optimizer=reference_optimizer(), run_dir=tmp_path / "r", callbacks=[Interrupt(5)], **kwargs)
    folder = only_run(tmp_path / "r")
    fresh = reference_model(seed=99)  # other initial weights: the checkpoint replaces them
    history = fresh.fit(x, y, optimizer=reference_optimizer(), run_dir=folder, resume=True, **kwargs)
    assert history.epoch == [1, 2, 3]
    for a, b in zip(whole.get_weights(), fresh.get_weights()):
        assert a.tobytes() == b.tobytes()
    config = json.loads((folder / "config.json").read_text())
    assert config["data"]["train"]["x"]["shape"] == [48, 64, 64, 3] and config["epochs"] == 3
    assert {"layers", "optimizer", "seed", "backend", "dtype", "versions"} <= set(config)
    rows = list(csv.DictReader((folder / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert (folder / "run_stats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_with_changed_settings_is_refused(tmp_path, data):
    (x, y), _ = data
    model = reference_model(seed=2)
    model.fit(x, y, epochs=1, batch_size=16, optimizer=reference_optimizer(), run_dir=tmp_path, verbose=0)
    folder = only_run(tmp_path)
    with pytest.raises(ValueError, match=r"settings differ from the run's \(batch_size: 16 → 8\)"):
        model.fit(x, y, epochs=1, batch_size=8, optimizer=reference_optimizer(), run_dir=folder, resume=True)
    with pytest.raises(ValueError, match=r"data\.train\.x\.sha256"):
        model.fit(x[::-1], y, epochs=1, batch_size=16, optimizer=reference_optimizer(), run_dir=folder, resume=True)
    with pytest.raises(ValueError, match=r"optimizer\.config\.learning_rate: 0\.009 → 0\.001"):
        model.fit(x, y, epochs=1, batch_size=16, optimizer=xpnn.Adam(0.001, epsilon=1e-8), run_dir=folder, resume=True)
    with pytest.raises(TypeError, match=r"run_dir must be a folder path or an xpnn.runs.RunDir; got int"):
        model.fit(x, y, epochs=1, run_dir=123)
    with pytest.raises(ValueError, match=r"resume=True needs run_dir"):
        model.fit(x, y, epochs=1, resume=True)


def test_cli_resume_of_an_edited_run_is_refused(tmp_path, capsys):
    assert cli.main(["train", *TRAIN, "-q", "--epochs", "1", "--run-dir", str(tmp_path)]) == 0
    folder = only_run(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["batch_size"] = 8
    (folder / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "config.json was changed after the run started (batch_size: 16 → 8)" in err and "Undo the change" in err
    assert cli.main(["train", "--resume", str(folder), "--batch-size", "16"]) == 2
    assert "--resume takes every setting but --epochs from the run's config.json; drop --batch-size" in (
        capsys.readouterr().err
    )
    assert cli.main(["train", "--resume", str(tmp_path)]) == 2
    assert "is a folder but not a run folder (no config.json)" in capsys.readouterr().err


def test_cli_resume_with_more_epochs_extends_the_run_exactly(tmp_path):
    """`xpnn train --resume RUN --epochs 3` after a 1-epoch run equals a 3-epoch run from the start."""
    short, full = tmp_path / "short", tmp_path / "full"
    assert cli.main(["train", *TRAIN, "-q", "--epochs", "1", "--run-dir", str(short)]) == 0
    assert cli.main(["train", "--resume", str(only_run(short)), "--epochs", "3", "-q"]) == 0
    assert cli.main(["train", *TRAIN, "-q", "--epochs", "3", "--run-dir", str(full)]) == 0
    extended, straight = final_state(only_run(short)), final_state(only_run(full))
    assert extended[2] == straight[2] and len(straight[2]) == 3
    assert all(np.array_equal(a, b) for a, b in zip(extended[0] + extended[1], straight[0] + straight[1]))
    assert "epochs extended from 1 to 3" in (only_run(short) / "events.log").read_text()


# ---- divergence and stuck runs -------------------------------------------------------------------------
class PoisonWeights(Callback):
    """Puts an Inf into the first kernel during epoch 2, so the next batch's cost is not finite."""

    def on_batch_end(self, model, state, batch):
        if batch.epoch == 2 and batch.index == 0:
            model.layers[0].params["w"][0, 0, 0, 0] = np.inf


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_divergence_keeps_the_last_good_checkpoint(tmp_path, data):
    (x, y), _ = data
    model = reference_model(seed=2)
    kwargs = {"epochs": 3, "batch_size": 16, "seed": 1, "verbose": 0}
    with pytest.raises(xpnn.DivergedError) as exc:
        model.fit(x, y, optimizer=reference_optimizer(), run_dir=tmp_path, callbacks=[PoisonWeights()], **kwargs)
    message = str(exc.value)
    assert exc.value.epoch == 2 and exc.value.step == 2
    assert "epoch 2, step 2" in message and "Lower the learning rate" in message
    assert "last good checkpoint (after epoch 1)" in message
    folder = only_run(tmp_path)
    assert json.loads((folder / "status.json").read_text())["status"] == "diverged"
    one_epoch = reference_model(seed=2)
    one_epoch.fit(x, y, optimizer=reference_optimizer(), **{**kwargs, "epochs": 1})
    kept = xpnn.load_model(folder / "checkpoint.h5")
    for a, b in zip(kept.get_weights(), one_epoch.get_weights()):
        assert a.tobytes() == b.tobytes()


class PoisonLastUpdate(Callback):
    """Puts an Inf into the dense kernel after epoch 2's last batch: every cost of the epoch was finite."""

    def on_batch_end(self, model, state, batch):
        if batch.epoch == 2 and batch.index == 2:
            model.layers[-1].params["w"][0, 0] = np.inf


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_a_last_update_that_blows_up_keeps_the_good_weights(tmp_path, data):
    """Issue 13 §5: finite costs but non-finite weights at the epoch's end; nothing NaN is kept or written."""
    (x, y), (xt, yt) = data
    model = reference_model(seed=2)
    kwargs = {"batch_size": 16, "seed": 1, "verbose": 0}
    with pytest.raises(xpnn.DivergedError, match=r"a weight became non-finite at epoch 2.*were restored"):
        model.fit(x, y, epochs=3, optimizer=reference_optimizer(), run_dir=tmp_path, callbacks=[PoisonLastUpdate()],
                  **kwargs)  # fmt: skip
    one_epoch = reference_model(seed=2)
    one_epoch.fit(x, y, epochs=1, optimizer=reference_optimizer(), **kwargs)
    for a, b in zip(model.get_weights(), one_epoch.get_weights()):  # the model in memory holds epoch 1's weights
        assert a.tobytes() == b.tobytes()
    folder = only_run(tmp_path)
    kept = xpnn.load_model(folder / "checkpoint.h5")
    assert all(np.isfinite(w).all() for w in kept.get_weights()) and not (folder / "model.h5").exists()


def test_a_non_finite_validation_loss_is_a_divergence(data):
    (x, y), (xt, yt) = data
    bad_val = (np.full((4, 64, 64, 3), 3e38), yt[:4])  # finite inputs whose logits overflow
    model = reference_model(seed=2)
    with pytest.raises(xpnn.DivergedError, match="the validation loss"), np.errstate(all="ignore"):
        model.fit(x, y, epochs=1, batch_size=16, validation_data=bad_val, verbose=0)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_cli_reports_divergence(tmp_path, capsys):
    argv = ["train", *TRAIN, "-q", "--optimizer", "sgd", "--learning-rate", "1e20", "--run-dir", str(tmp_path)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "xpnn: stopped: the cost became nan at epoch 1, step 2" in err and "Lower the learning rate" in err
    assert "last good checkpoint (the initial weights, epoch 0)" in err
    assert json.loads((only_run(tmp_path) / "status.json").read_text())["status"] == "diverged"


def test_a_stuck_run_is_reported_and_can_be_stopped(tmp_path, data, capsys):
    (x, y), _ = data
    # Adam at lr 0.1 (11x the reference rate) kills every unit of the first ReLU within two epochs
    model = reference_model(seed=1)
    spec = runs.RunDir(tmp_path, stop_when_stuck=True)
    history = model.fit(x, y, epochs=4, batch_size=16, optimizer=xpnn.Adam(0.1), seed=1, run_dir=spec)
    assert history.epoch == [1, 2]  # stopped after the epoch that found it
    assert StuckDetector.dead_layer(model, model._prepare(x, None)[0]) == 1
    err = capsys.readouterr().err
    assert (
        "warning: epoch 2: layer 1 ReLU() (after layer 0, Conv2D) outputs 0 for every unit" in err
        and "all its units are dead" in err
    )
    assert "lower the learning rate (now 0.1; try 0.033) or start again with another seed" in err
    events = (spec.folder / "events.log").read_text()
    assert "stuck: epoch 2: layer 1 ReLU()" in events and "Stopping the run" in events
    assert json.loads((spec.folder / "status.json").read_text())["status"] == "stopped (stuck)"
    healthy = reference_model(seed=1)
    detector = StuckDetector(verbose=0)
    healthy.fit(x, y, epochs=2, batch_size=16, optimizer=reference_optimizer(), callbacks=[detector], verbose=0)
    assert detector.reports == []


def test_flat_cost_at_chance_is_reported():
    model = reference_model(seed=1)
    state = TrainState(history=History())
    detector = StuckDetector(patience=3, verbose=0)
    for epoch, loss in enumerate([2.5, 1.7920, 1.7919, 1.7918, 1.7918], start=1):
        state.epoch = epoch
        logs = {"loss": loss, "accuracy": 0.17}
        state.history.append(epoch, logs)
        detector.on_epoch_end(model, state, logs)
        assert bool(detector.reports) == (epoch == 5)
    assert (
        "cost has stayed at 1.7918" in detector.reports[0]["message"]
        and "ln 6 = 1.792" in detector.reports[0]["message"]
    )
    assert not state.stop  # reporting only, unless stop=True


# ---- the CLI end to end ------------------------------------------------------------------------------
def test_cli_train_evaluate_predict_runs(tmp_path, capsys):
    from PIL import Image

    config = tmp_path / "run.toml"
    config.write_text(
        "epochs = 2\nbatch_size = 16\nlearning_rate = 0.009\nembedded = true\nn_train = 48\nn_test = 12\nseed = 3\n"
        f'run_dir = "{tmp_path / "runs"}"\n'
    )
    assert cli.main(["train", "--config", str(config), "--epochs", "3", "-q"]) == 0
    out = capsys.readouterr().out
    folder = only_run(tmp_path / "runs")
    saved = json.loads((folder / "config.json").read_text())
    assert saved["epochs"] == 3 and saved["seed"] == 3 and saved["data"]["source"] == "embedded"
    assert {p.name for p in folder.iterdir()} >= {
        "config.json",
        "history.csv",
        "model.h5",
        "checkpoint.h5",
        "run_stats.png",
    }
    figures = json.loads((folder / "evaluation.json").read_text())
    assert f"test accuracy {figures['test']['accuracy']:.4f}" in out

    assert cli.main(["evaluate", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"test   loss {figures['test']['loss']:.4f}  accuracy {figures['test']['accuracy']:.4f}  (12 images)" in out

    assert cli.main(["runs", "--run-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert folder.name in out and "finished" in out and "3/3" in out

    _, (xt, yt) = xpnn.datasets.load_embedded(n_train=48, n_test=12)
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{yt[i]}_img{i}.png"))
        Image.fromarray(xt[i]).save(paths[-1])
    assert cli.main(["predict", str(folder), *paths]) == 0
    out = capsys.readouterr().out
    expected = xpnn.load_model(folder / "model.h5").predict(xt[:3]).argmax(1)
    assert [int(line.split("class ")[1].split()[0]) for line in out.splitlines()[:3]] == expected.tolist()
    assert "match the label in the file name" in out

    # the same config repeats the run: identical weights
    assert cli.main(["train", "--config", str(folder / "config.json"), "-q", "--run-dir", str(tmp_path / "again")]) == 0
    again = only_run(tmp_path / "again")
    for a, b in zip(
        xpnn.load_model(folder / "model.h5").get_weights(), xpnn.load_model(again / "model.h5").get_weights()
    ):
        assert a.tobytes() == b.tobytes()


# ---- bad input -----------------------------------------------------------------------------------------
def write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("typo.toml", "learning_rat = 0.01\n", "unknown setting 'learning_rat'. Did you mean 'learning_rate'?"),
        ("typo.json", '{"batchsize": 8}', "unknown setting 'batchsize'. Did you mean 'batch_size'?"),
        (
            "type.toml",
            'epochs = "3"\n',
            r"setting 'epochs' must be an integer; got '3' \(str\)\. Write epochs = 3 without quotes",
        ),
        ("float.toml", "seed = 1.5\n", "setting 'seed' must be an integer; got 1.5"),
        ("rate.toml", "learning_rate = -1\n", "setting 'learning_rate' must be a positive number; got -1"),
        ("bool.toml", 'embedded = "yes"\n', "setting 'embedded' must be true or false"),
        ("bad.toml", "epochs = = 3\n", "is not valid TOML"),
        ("bad.json", "{epochs: 3}", "is not valid JSON"),
        ("run.yaml", "epochs: 3\n", "must end in .toml or .json; got .yaml"),
        ("list.json", "[1, 2]", "must hold a table of settings; got list"),
        (
            "opt.toml",
            'optimizer = "adma"\nembedded = true\nn_train = 12\n',
            "unknown optimizer 'adma'.*Did you mean 'adam'",
        ),
        ("dtype.toml", 'dtype = "float16"\nembedded = true\nn_train = 12\n', "dtype must be 'float32' or 'float64'"),
        (
            "layer.toml",
            'embedded = true\nn_train = 12\n[[layers]]\nclass_name = "Conv2d"\nconfig = {filters = 4}\n',
            r"layers\[0\]: unknown layer 'Conv2d'.*Did you mean 'Conv2D'",
        ),
        (
            "arg.toml",
            'embedded = true\nn_train = 12\n[[layers]]\nclass_name = "Dense"\nconfig = {unit = 6}\n',
            r"layers\[0\] \(Dense\): .*unexpected keyword argument 'unit'",
        ),
        (
            "shape.toml",
            "embedded = true\nn_train = 12\n"
            + '[[layers]]\nclass_name = "MaxPool2D"\nconfig = {pool_size = 8}\n' * 3
            + '[[layers]]\nclass_name = "Flatten"\n[[layers]]\nclass_name = "Dense"\nconfig = {units = 6}\n',
            r"layer 2 \(MaxPool2D\): MaxPool2D pool_size \(8, 8\) is bigger than its VALID input 1x1",
        ),
        (
            "classes.toml",
            'embedded = true\nn_train = 12\n[[layers]]\nclass_name = "Flatten"\n'
            '[[layers]]\nclass_name = "Dense"\nconfig = {units = 4}\n',
            r"output shape is \(4,\) but the data have 6 classes; end the layers with Dense\(6\)",
        ),
    ],
)
def test_bad_config_files(tmp_path, capsys, name, text, message):
    path = write(tmp_path, name, text)
    assert cli.main(["train", "--config", path, "-q", "--no-plot", "--run-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xpnn train: error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_bad_command_lines(tmp_path, capsys):
    cases = [
        (["train", "--config", str(tmp_path / "none.toml")], "config file .*none.toml does not exist"),
        (["train", "--batch-size", "0", "--embedded"], "setting 'batch_size' must be >= 1; got 0"),
        (
            ["train", "--data", str(tmp_path / "nosigns"), "-q"],
            "^xpnn train: error: no SIGNS data at --data .*nosigns: [^\\n]*--embedded[^\\n]*\\n$",  # one line
        ),
        (["train", "--backend", "tpu", "--embedded"], "unknown backend 'tpu'"),
        (["train", "--resume", str(tmp_path / "nope")], "no run folder at .*nope"),
        (["evaluate", str(tmp_path)], "not a run folder"),
        (["runs", "--run-dir", str(tmp_path / "none")], "no runs folder at .*none; train with"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert re.search(message, err, re.DOTALL), (argv, err)


def test_unwritable_run_dir(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert cli.main(["train", *TRAIN, "-q", "--run-dir", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"cannot create a run folder under {blocker / 'runs'}: Not a directory" in err
    assert "Pass a run_dir (--run-dir) in a folder you can write to" in err

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", denied)
    assert cli.main(["train", *TRAIN, "-q", "--run-dir", str(tmp_path / "locked")]) == 2
    assert "cannot create a run folder under" in capsys.readouterr().err


def test_full_disk_during_a_run_keeps_the_checkpoint(tmp_path, data, monkeypatch):
    (x, y), _ = data
    model = reference_model(seed=2)
    real = runs.Run.save_checkpoint

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def fill_disk_at_epoch_2(self, model, state):
        if state.epoch == 2:
            monkeypatch.setattr(h5py.Group, "create_dataset", no_space)
        real(self, model, state)

    monkeypatch.setattr(runs.Run, "save_checkpoint", fill_disk_at_epoch_2)
    with pytest.raises(OSError, match=r"no space left on the device while saving .*checkpoint\.h5"):
        model.fit(x, y, epochs=3, batch_size=16, optimizer=reference_optimizer(), run_dir=tmp_path, verbose=0)
    monkeypatch.undo()
    folder = only_run(tmp_path)
    assert not list(folder.glob(".*.tmp"))
    kept = xpnn.load_model(folder / "checkpoint.h5")  # still the one after epoch 1, whole
    one_epoch = reference_model(seed=2)
    one_epoch.fit(x, y, epochs=1, batch_size=16, optimizer=reference_optimizer(), verbose=0)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(kept.get_weights(), one_epoch.get_weights()))


def test_bad_images_for_predict(tmp_path, capsys):
    from PIL import Image

    assert cli.main(["train", *TRAIN, "-q", "--epochs", "1", "--run-dir", str(tmp_path / "runs")]) == 0
    folder = only_run(tmp_path / "runs")
    Image.new("RGB", (100, 80)).save(tmp_path / "big.jpg")
    Image.new("L", (64, 64)).save(tmp_path / "grey.png")
    Image.new("RGBA", (64, 64)).save(tmp_path / "alpha.png")
    (tmp_path / "text.png").write_text("not an image")
    cases = [
        ("big.jpg", "big.jpg is 100x80; the model takes 64x64 images. Resize it.*or pass --resize"),
        ("grey.png", "grey.png is mode 'L'; the model takes RGB \\(3 channels\\). Convert it"),
        ("alpha.png", "alpha.png is mode 'RGBA'; the model takes RGB"),
        ("text.png", "cannot read .*text.png as an image \\(JPEG or PNG\\)"),
        ("missing.png", "image .*missing.png does not exist"),
    ]
    capsys.readouterr()
    for name, message in cases:
        assert cli.main(["predict", str(folder), str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert re.search(message, err), (name, err)
    assert cli.main(["predict", str(folder), "--resize", str(tmp_path / "big.jpg"), str(tmp_path / "grey.png")]) == 0
    assert capsys.readouterr().out.count("class ") == 2


def test_run_ids_are_unique_and_sortable():
    from datetime import datetime, timedelta, timezone

    t = datetime(2026, 11, 25, 3, 15, 0, 123456, tzinfo=timezone.utc)
    ids = [runs.new_run_id(t + timedelta(microseconds=i)) for i in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert ids[0].startswith("20261125-031500-123456-") and len(ids[0]) == len("20261125-031500-123456-ab12")


def test_progress_bar_and_line_mode(data):
    import io

    from xpnn.callbacks import ProgressBar, progress_callbacks

    (x, y), _ = data
    out = io.StringIO()
    model = reference_model(seed=1)
    model.fit(x, y, epochs=2, batch_size=16, callbacks=[ProgressBar(2, 3, file=out)], verbose=0)
    text = out.getvalue()
    assert "epoch 1/2" in text and "epoch 2/2" in text and "3/3" in text and "loss 1." in text
    assert re.search(r"\d+\.\d\d s *\n", text)  # seconds per epoch
    assert progress_callbacks(1, 2, 3) == ([], 1)  # pytest's stdout is not a terminal: one line per epoch
    assert progress_callbacks(0, 2, 3) == ([], 0)


def test_progress_line_shows_every_figure_in_full_at_80_columns(data):
    """The epoch's logs (loss, accuracy, val_*) appear whole at 80 columns, in the loop's order, no line cut."""
    import io

    from xpnn.callbacks import ProgressBar

    (x, y), (xt, yt) = data
    out = io.StringIO()
    model = reference_model(seed=1)
    bar = ProgressBar(2, 3, file=out, width=80, interval=-1.0)  # redraw at every step
    history = model.fit(x, y, epochs=2, batch_size=16, validation_data=(xt, yt), callbacks=[bar], verbose=0)
    text = out.getvalue()
    screen_lines = [line for chunk in text.split("\n") for line in chunk.split("\r")]
    assert max(len(line.rstrip()) for line in screen_lines) <= 79
    last = text.rsplit("epoch 2/2  3/3", 1)[1]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert f"{key} {history.history[key][-1]:.4f}" in last, key
    assert last.index("loss") < last.index("accuracy") < last.index("val_loss")  # the loop's order, not sorted
    assert "cost=" not in text and "s=" not in text


def test_cli_config_of_a_python_run_is_refused_and_seed_0_replays(tmp_path, data, capsys):
    """Issue 13 §8: a Python run's config.json names no loadable data (error, not SIGNS); seed 0 is accepted."""
    (x, y), _ = data
    model = reference_model(seed=1)
    model.fit(x, y, epochs=1, batch_size=16, optimizer=reference_optimizer(), run_dir=tmp_path / "py", verbose=0)
    config = only_run(tmp_path / "py") / "config.json"
    assert json.loads(config.read_text())["seed"] == 0  # fit's default seed
    assert cli.main(["train", "--config", str(config), "--run-dir", str(tmp_path / "cli"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "trained in Python on its own arrays" in err and len(err.strip().splitlines()) == 1
    seed0 = tmp_path / "seed0.toml"
    seed0.write_text("seed = 0\nepochs = 1\n")
    assert cli.main(["train", *TRAIN, "--config", str(seed0), "-q", "--run-dir", str(tmp_path / "s0")]) == 0


def test_a_run_folder_is_held_by_one_process_and_a_killed_run_shows_interrupted(tmp_path, capsys):
    """Issue 13 §6: a second resume of a folder in use is refused; the lock dies with a killed process."""
    from xpnn.runlock import RunLock

    proc = finish(xpnn_cmd("train", *TRAIN, "-q", "--epochs", "2", "--run-dir", str(tmp_path), kill="step:4"))
    assert proc[0] == -signal.SIGKILL
    folder = only_run(tmp_path)
    assert cli.main(["runs", "--run-dir", str(tmp_path)]) == 0
    assert "interrupted" in capsys.readouterr().out
    with RunLock(folder):  # another process (here: this one) holds it
        code, out, err = finish(xpnn_cmd("train", "--resume", str(folder), "-q"))
        assert code != 0 and f"run {folder.name} is in use by process {os.getpid()}" in err
    assert finish(xpnn_cmd("train", "--resume", str(folder), "-q"))[0] == 0
    assert json.loads((folder / "status.json").read_text())["status"] == "finished"


def test_cli_trains_on_an_image_folder_and_predicts_a_folder_by_run_id(tmp_path, capsys, monkeypatch):
    """Issue 17: `xpnn train --data FOLDER` detects an image folder (said on the first line); predict takes a folder
    and a bare run id."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for label in ("cat", "dog"):
            folder = tmp_path / "pets" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--data", str(tmp_path / "pets"), "--epochs", "1", "--batch-size", "8", "--no-plot"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith(f"data: image folder {tmp_path / 'pets'}: train/ 24 images, test/ 8 images")
    run = only_run(tmp_path / "runs")
    assert json.loads((run / "config.json").read_text())["data"]["source"] == "image_folder"
    assert cli.main(["predict", run.name, str(tmp_path / "pets" / "test" / "cat")]) == 0
    assert capsys.readouterr().out.count("class ") == 4
    assert cli.main(["evaluate", run.name]) == 0
    assert "test   loss" in capsys.readouterr().out
