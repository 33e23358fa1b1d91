"""Shared fixtures: real data locations, small IDX datasets, and the CI rule.

In CI (CI=true) a missing prerequisite is a failure, never a silent skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lstm_train.checkpoint import checkpoint_files
from lstm_train.slurm.jobstate import slurm_states

ROOT = Path(__file__).resolve().parents[1]
# IDX type codes (the MNIST file format), by the array's dtype
IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B, np.dtype(np.int32): 0x0C,
             np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def write_idx(path: Path, data: np.ndarray) -> None:
    """An array as an IDX file (magic 0 0 type ndim, then big-endian sizes and values), written
    here from the format's description: what the fake datasets are made of, and the oracle that
    `lstm_train.data.readers.idx.read_idx` is checked against."""
    array = np.asarray(data)
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    Path(path).write_bytes(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally when a prerequisite is missing; fail in CI, where everything must run."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def prepared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared data (the store's default is ~/.cache/lstm_train/prepared) kept in the session's
    temporary directory; subprocesses and SLURM jobs inherit it through the environment."""
    where = tmp_path_factory.mktemp("prepared")
    os.environ["LSTM_TRAIN_CACHE"] = str(where)
    return where


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The real MNIST/Fashion-MNIST files ($LSTM_TRAIN_DATA or ../shared/data)."""
    root = Path(os.environ.get("LSTM_TRAIN_DATA", ROOT.parent / "shared" / "data"))
    require((root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists(), f"MNIST not found under {root}")
    return root


def make_fake_mnist(root: Path, n_train: int = 512, n_test: int = 200, seed: int = 0, name: str = "MNIST") -> Path:
    """A small learnable MNIST-shaped dataset in torchvision's layout: the label is drawn as
    a bright horizontal bar at row 2*label, so an LSTM reading rows learns it in a few steps."""
    rng = np.random.default_rng(seed)
    raw = root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label + 4, 4:24] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture
def fake_mnist(tmp_path: Path) -> Path:
    return make_fake_mnist(tmp_path / "data")


@pytest.fixture
def one_thread():
    """One torch thread for tests that train in-process: on a shared 2-core machine spinning
    OpenMP threads make small models crawl.  Use with `pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: Path = ROOT,
            fresh: bool = False) -> subprocess.CompletedProcess:
    """`python -m lstm_train ARGS` in its own process, as a user would run it.

    The process is forked from a warm server that imported torch and lstm_train once
    (`tests/warm.py`: ~3 s of imports saved per call).  `fresh=True`, or an environment that
    changes what an interpreter reads only at start-up (PYTHON* variables), runs a new
    interpreter instead: for tests about the process itself (what it imports, entry points
    installed during the test)."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **(env or {})}
    startup = {k: v for k, v in full_env.items() if k.startswith("PYTHON") and k not in ("PYTHONUNBUFFERED", "PYTHONPATH")}
    if fresh or startup != {k: v for k, v in os.environ.items() if k in startup or (
            k.startswith("PYTHON") and k not in ("PYTHONUNBUFFERED", "PYTHONPATH"))}:
        return subprocess.run([sys.executable, "-m", "lstm_train", *args], capture_output=True, text=True,
                              env=full_env, timeout=timeout, cwd=cwd)
    from .warm import SERVER

    return SERVER.run(list(args), full_env, Path(cwd), timeout)


@pytest.fixture(scope="session", autouse=True)
def _stop_warm_server():
    yield
    from .warm import SERVER

    SERVER.stop()


def result_of(run_dir: Path) -> dict:
    """A finished run's result.json."""
    return json.loads((run_dir / "result.json").read_text())


def resume_inside_an_epoch(args: list[str], tmp_path: Path, steps_per_epoch: int) -> tuple[dict, dict, int]:
    """Run `args` to the end; then, in a copy of that run directory cut back to its first
    checkpoint inside an epoch after the first (as after kill -9), run them again.  Returns
    both results and the step resumed from."""
    reference, cut = tmp_path / "reference", tmp_path / "cut"
    proc = run_cli("run", *args, f"train.output_dir={reference}")
    assert proc.returncode == 0, proc.stderr
    shutil.copytree(reference, cut)
    (cut / "result.json").unlink()
    mid = next(s for s, _ in checkpoint_files(cut / "checkpoints") if s > steps_per_epoch and s % steps_per_epoch)
    for step, path in checkpoint_files(cut / "checkpoints"):
        if step > mid:
            shutil.rmtree(path)
    proc = run_cli("run", *args, f"train.output_dir={cut}")
    assert proc.returncode == 0, proc.stderr
    return result_of(reference), result_of(cut), mid


def accelerate_cli(num_processes: int, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes N -m lstm_train ARGS` on this CPU machine."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **(env or {})}
    accelerate = str(Path(sys.executable).parent / "accelerate")
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "lstm_train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# SLURM: the real local cluster (slurm/local-cluster.sh) and a clean environment for jobs


@pytest.fixture(scope="session")
def cluster() -> None:
    """The local SLURM cluster: sbatch on PATH and both nodes of partition `debug` usable."""
    require(shutil.which("sbatch") is not None,
            "no sbatch on PATH: start the test cluster with `sudo slurm/local-cluster.sh up`")
    out = subprocess.run(["sinfo", "-h", "-N", "-p", "debug", "-o", "%N %t"], capture_output=True, text=True)
    usable = [ln.split()[0] for ln in out.stdout.splitlines() if re.match(r"\S+ (idle|mix|alloc|comp)", ln)]
    require(out.returncode == 0 and len(usable) >= 2,
            f"local SLURM cluster not up (sinfo: {(out.stdout + out.stderr).strip()!r}): "
            "run `sudo slurm/local-cluster.sh up`")


NODE1_MARK = "node1_jobs"
NODE1_GROUP = "slurm-node1"


def slurm_group(item: pytest.Item) -> str | None:
    """The xdist group of a test on the cluster (None: not on the cluster).  `slurm` holds the
    tests that may use both nodes: one at a time, since the node-down test takes node2 from under
    whatever runs there.  A test marked `node1_jobs` pins every job it queues to node1
    (`--nodelist=node1`), so nothing in `slurm` can touch its jobs: it runs in its own group, on
    another worker, while `slurm` goes on: the two groups split the cluster tests' waits on SLURM
    (~250 s each when alone; the time-limit test, the requeue and the sweeps are node1's)."""
    if "cluster" not in getattr(item, "fixturenames", ()):
        return None
    return NODE1_GROUP if item.get_closest_marker(NODE1_MARK) else "slurm"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{NODE1_MARK}: every job the test queues is pinned to node1 "
                            f"(xdist group {NODE1_GROUP}, beside the slurm group)")


@pytest.fixture(autouse=True)
def _slurm_tests_grouped(request: pytest.FixtureRequest) -> None:
    """A test on the cluster runs in its xdist group whenever the run groups at all
    (`--dist loadgroup`): two of the `slurm` group at once would share the two nodes, and the
    node-down test would take node2 from under the other's job."""
    group = slurm_group(request.node)
    if group and getattr(request.config.option, "loadgroup", False):
        assert request.node.nodeid.endswith(f"@{group}"), f"{request.node.nodeid} is not in the {group} xdist group"


def job_env(tmp_path: Path, data_root: Path) -> dict[str, str]:
    """What the CLI (and through sbatch's --export=ALL, the jobs) see: the given data,
    W&B kept away from the home directory and the network, no inherited rank variables."""
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("WANDB_") and k not in ("NETRC", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                      "MASTER_ADDR", "MASTER_PORT")}
    home = tmp_path / "wandb-home"
    e.update(
        LSTM_TRAIN_DATA=str(data_root), PYTHONUNBUFFERED="1", NETRC=str(home / "netrc"),
        WANDB_CONFIG_DIR=str(home / "config"), WANDB_CACHE_DIR=str(home / "cache"),
        WANDB_DATA_DIR=str(home / "data"), WANDB_SILENT="true",
    )
    return e


@pytest.fixture
def slurm_env(tmp_path: Path, mnist_root: Path) -> dict[str, str]:
    """Job environment with the real MNIST."""
    return job_env(tmp_path, mnist_root)


@pytest.fixture
def fake_slurm_env(tmp_path: Path, fake_mnist: Path) -> dict[str, str]:
    """Job environment with a small fake MNIST (fast start, fast epochs)."""
    return job_env(tmp_path, fake_mnist)


@pytest.fixture
def jobs() -> list[str]:
    """Job ids a test submitted; whatever is still queued or running at the end is cancelled."""
    ids: list[str] = []
    yield ids
    live = [j for j, st in slurm_states(ids).items() if st.active] if ids else []
    if live:
        subprocess.run(["scancel", *live], check=False)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`-n 3 --dist loadgroup`, what scripts/test.sh runs), the tests that
    queue jobs on the local SLURM cluster run one after another on one worker (group `slurm`,
    see `slurm_group`; the node1-pinned ones in their own group, on another): a test waiting on
    the queue then waits for its own jobs only.  Everything else is shared out between the workers.

    The cluster tests come first: xdist hands out the largest group first and one-test units in
    collection order, so the node1 group starts at once instead of late in the run, and both
    groups' waits on SLURM's clock overlap the CPU-bound tests from the start.

    tryfirst: xdist's worker reads the `xdist_group` marks in its own hook of this name (it
    appends `@slurm` to the node id, which is what groups them); a mark added after it is
    ignored, and the node-down test then downed node2 under another test's job."""
    for item in items:
        group = slurm_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    order = {NODE1_GROUP: 0, "slurm": 1, None: 2}
    items.sort(key=lambda item: order[slurm_group(item)])  # stable: collection order within each
