"""xpnn.distributed: sharding, config checks and checkpoints in-process; 2-rank runs under mpiexec.

The MPI tests launch tests/distributed_worker.py with `mpiexec -n 2` as a subprocess (with a timeout)
and compare with one plain process in float64. They skip when mpi4py or mpiexec is missing
(`pip install -e ".[test,mpi]"` provides both; CI installs it).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xpnn
from xpnn.distributed.config import check_agreement, disagreements
from xpnn.distributed.shard import describe_split, shard, shard_bounds
from xpnn.reference import reference_model, reference_optimizer

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"
N_IMAGES = 200
TOL = 1e-12  # 2 ranks vs 1 differ only in summation order


def _mpiexec() -> str | None:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which("mpiexec", path=search)


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
    reason='needs mpi4py and mpiexec: pip install -e ".[test,mpi]"',
)


def launch(ranks: int, *args: str, timeout: float = 120, launcher_args: tuple[str, ...] = ()):
    """Run the worker on `ranks` ranks; returns the CompletedProcess (never hangs past `timeout`)."""
    cmd = [MPIEXEC, *launcher_args, "-n", str(ranks)]
    version = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True).stdout
    if "Open MPI" in version or "OpenRTE" in version:
        cmd.insert(1, "--allow-run-as-root")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(
        [*cmd, sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def single_process(epochs: int, batch_size: int, seed: int = 1, n: int = N_IMAGES, checkpoint=None):
    """The same run as the worker's, in this process without MPI: (history, weights)."""
    (x, y), _ = xpnn.datasets.load_embedded(n_train=n, n_test=6)
    model = reference_model("float64", seed=seed)
    history = model.fit(
        x, y, epochs=epochs, batch_size=batch_size, optimizer=reference_optimizer(), seed=seed, verbose=0,
        checkpoint=checkpoint,
    )  # fmt: skip
    return history.history, model.get_weights()


def max_rel(a, b) -> float:
    """Largest |a − b| relative to the largest |a| of each array, over a list of arrays."""
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))) / np.max(np.abs(u))) for u, v in zip(a, b))


# ---- in-process ------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [0, 1, 7, 32, 64, 65])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shards_are_exactly_the_batch(batch, size):
    idx = np.random.default_rng(batch).permutation(1000)[:batch]
    parts = [shard(idx, r, size) for r in range(size)]
    assert np.array_equal(np.concatenate(parts), idx)
    lengths = [len(p) for p in parts]
    assert max(lengths) - min(lengths) <= 1
    assert [shard_bounds(batch, r, size)[1] - shard_bounds(batch, r, size)[0] for r in range(size)] == lengths


def test_uneven_batch_is_explained():
    assert describe_split(64, 2) is None
    note = describe_split(65, 2)
    assert "1 rank(s) take 33" in note and "1 take 32" in note and "64" in note
    assert "get no samples" in describe_split(3, 4)


def test_disagreeing_ranks_are_named():
    base = {"batch_size": "64", "seed": "1", "x": "(200, 64, 64, 3) float64 ab12"}
    other = dict(base, seed="2")
    assert disagreements([base, base]) == []
    check_agreement([base, base, base])
    assert disagreements([base, base, other]) == ["seed: rank 2 has 2, rank 0 has 1"]
    with pytest.raises(ValueError, match="seed: rank 1 has 2, rank 0 has 1"):
        check_agreement([base, other])


def test_distributed_argument_is_checked():
    with pytest.raises(TypeError, match="distributed must be True, False"):
        reference_model("float64").fit(np.zeros((4, 64, 64, 3)), [0, 1, 2, 3], verbose=0, distributed="yes")


def test_checkpoint_resumes_exactly(tmp_path):
    ckpt = tmp_path / "run.h5"
    reference, ref_weights = single_process(3, 45, n=90)
    first, _ = single_process(2, 45, n=90, checkpoint=ckpt)
    assert ckpt.exists() and [p.name for p in tmp_path.iterdir()] == ["run.h5"]  # no temporary left over
    resumed, weights = single_process(3, 45, n=90, checkpoint=ckpt)
    assert resumed["loss"][:2] == first["loss"]  # the history came back from the file
    assert resumed["loss"] == reference["loss"]
    for w, r in zip(weights, ref_weights):
        np.testing.assert_array_equal(w, r)


def test_checkpoint_refuses_another_optimizer(tmp_path):
    ckpt = tmp_path / "run.h5"
    single_process(1, 45, n=45, checkpoint=ckpt)
    (x, y), _ = xpnn.datasets.load_embedded(n_train=45, n_test=6)
    with pytest.raises(ValueError, match=r"differ from the checkpoint's \(.*optimizer\.class_name: \"Adam\" → \"SGD\""):
        reference_model("float64").fit(x, y, epochs=2, optimizer="sgd", verbose=0, checkpoint=ckpt)


def test_checkpoint_refuses_other_data_and_names_it(tmp_path):
    """fit(checkpoint=...) is the run folder's format: it will not silently continue on other data or architecture."""
    ckpt = tmp_path / "run.h5"
    single_process(1, 45, n=45, checkpoint=ckpt)
    (x, y), _ = xpnn.datasets.load_embedded(n_train=45, n_test=6)
    with pytest.raises(ValueError, match=r"differ from the checkpoint's \(data\.train\.x\.sha256"):
        reference_model("float64").fit(x[::-1], y, epochs=2, batch_size=45, optimizer=reference_optimizer(), seed=1,
                                       verbose=0, checkpoint=ckpt)  # fmt: skip
    wide = xpnn.Sequential([xpnn.Flatten(), xpnn.Dense(6)], dtype="float64")
    with pytest.raises(ValueError, match=r"differ from the checkpoint's \(.*layers"):
        wide.fit(x, y, epochs=2, batch_size=45, optimizer=reference_optimizer(), seed=1, verbose=0, checkpoint=ckpt)


def test_backup_and_restore_callback_deletes_its_checkpoint_when_done(tmp_path):
    from xpnn.callbacks import BackupAndRestore

    (x, y), _ = xpnn.datasets.load_embedded(n_train=45, n_test=6)
    seen = []

    class Look(xpnn.training.Callback):
        def on_epoch_end(self, model, state, logs):
            seen.append(sorted(p.name for p in (tmp_path / "backup").iterdir()))

    reference_model("float64").fit(x, y, epochs=2, batch_size=45, verbose=0,
                                   callbacks=[Look(), BackupAndRestore(tmp_path / "backup")])  # fmt: skip
    assert seen == [[], ["checkpoint.h5"]]  # Look runs before the backup of the same epoch
    assert not (tmp_path / "backup" / "checkpoint.h5").exists()


@needs_mpi
def test_single_process_without_launcher_says_how_to_launch():
    env = {k: v for k, v in os.environ.items() if k not in xpnn.distributed.world.LAUNCHER_VARS}
    env["PYTHONPATH"] = str(ROOT)
    code = "import xpnn; xpnn.distributed.init()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode != 0
    assert "not started by an MPI launcher" in out.stderr and "mpiexec -n 2" in out.stderr


# ---- under mpiexec -----------------------------------------------------------------------------------
@needs_mpi
def test_two_ranks_equal_one_process(tmp_path):
    """2 ranks × 32 samples per step = 1 process × 64, for 3 epochs in float64 (last batch: 8 → 4 + 4)."""
    out = tmp_path / "two.npz"
    run = launch(2, "--n", str(N_IMAGES), "--epochs", "3", "--batch-size", "64", "--out", str(out))
    assert run.returncode == 0, run.stderr
    two = np.load(out)
    history, weights = single_process(3, 64)
    assert max_rel([history["loss"]], [two["loss"]]) < TOL
    assert list(two["accuracy"]) == history["accuracy"]
    assert max_rel(weights, [two[f"w{i}"] for i in range(len(weights))]) < TOL
    assert history["loss"][-1] < history["loss"][0]  # it trained, so equal weights are not equal initial ones


@needs_mpi
def test_checkpoint_from_two_ranks_resumes_on_one(tmp_path):
    """Uneven shards (45 → 23 + 22) for 2 epochs on 2 ranks, then epoch 3 in one plain process."""
    ckpt = tmp_path / "run.h5"
    run = launch(2, "--n", "100", "--epochs", "2", "--batch-size", "45", "--checkpoint", str(ckpt))
    assert run.returncode == 0, run.stderr
    resumed, weights = single_process(3, 45, n=100, checkpoint=ckpt)
    reference, ref_weights = single_process(3, 45, n=100)
    assert max_rel([reference["loss"]], [resumed["loss"]]) < TOL
    assert max_rel(ref_weights, weights) < TOL


@needs_mpi
@pytest.mark.parametrize("how", ["raise", "hang", "kill"])
def test_a_failing_rank_stops_the_job_and_is_named(how):
    """rank 1 raises / sleeps / dies at epoch 2; rank 0 must not wait forever, and the error names rank 1."""
    # for "kill", hydra's own clean-up would end rank 0 at once: switch it off to test xpnn's deadline
    launcher = ("-disable-auto-cleanup",) if how == "kill" else ()
    if how == "kill" and "HYDRA" not in subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True).stdout:
        pytest.skip("the kill case switches off MPICH hydra's clean-up (-disable-auto-cleanup); this is not hydra")
    run = launch(
        2, "--n", "64", "--batch-size", "16", "--fail", how, "--timeout", "2", launcher_args=launcher, timeout=60
    )
    assert run.returncode != 0
    if how == "raise":
        assert "rank 1 of 2 failed at epoch 2" in run.stderr and "injected failure" in run.stderr
    else:
        assert "rank 1 did not arrive (dead or hung)" in run.stderr
    assert "aborting all ranks" in run.stderr


@needs_mpi
def test_ranks_that_disagree_refuse_to_start():
    run = launch(2, "--n", "64", "--batch-size", "16", "--rank1-seed", "2", timeout=60)
    assert run.returncode != 0
    assert "ranks disagree on the training run" in run.stderr and "seed: rank 1 has 2, rank 0 has 1" in run.stderr


@needs_mpi
def test_a_stop_asked_on_one_rank_stops_every_rank(tmp_path):
    out = tmp_path / "run.npz"
    run = launch(2, "--n", "64", "--batch-size", "16", "--epochs", "3", "--stop-on-root-after", "1",
                 "--timeout", "20", "--out", str(out), timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert len(np.load(out)["loss"]) == 1  # rank 0 stopped after epoch 1, and rank 1 did not wait for epoch 2


def test_ranks_share_the_cores_unless_the_user_chose(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from xpnn.distributed.world import World, share_cpu_threads

    calls = []
    monkeypatch.setattr(threadpoolctl, "threadpool_limits", lambda **kw: calls.append(kw))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert share_cpu_threads(World(None, 1, 4, 1, 4)) == 2
    assert calls == [{"limits": 2, "user_api": "blas"}]
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert share_cpu_threads(World(None, 0, 4, 0, 4)) == 1
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert share_cpu_threads(World(None, 0, 4, 0, 4)) is None
    assert len(calls) == 2
