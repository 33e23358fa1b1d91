"""The batch plan: the same samples on every path, every sample once, any world size.

What the plan promises the loop: the tensor path and the torchvision Dataset +
DataLoader path (and torch's own DistributedSampler) hand every rank the same
samples in the same order; every sample is read once per epoch across ranks; all
ranks take the same number of steps; a step's samples do not depend on how many
processes or micro-batches share it; bucketing keeps padding low; all of it
deterministic, so a resumed run continues exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from lstm_train.bench import reset_accelerate
from lstm_train.config import validate_job
from lstm_train.data.batching import BatchPlan, cut_by_tokens, epoch_order, eval_batches
from lstm_train.data.ragged import gather
from lstm_train.distributed import batch_layout
from lstm_train.schema import ConfigError, DataBase, SequenceData
from lstm_train.tasks.classify import ClassifyTask, as_rows


def classify_job(root: Path, tmp_path: Path, **train: object) -> object:
    return validate_job(
        {
            "name": "batching_test",
            "task": "classify",
            "data": {"dataset": "mnist", "root": str(root), "batch_size": 32},
            "train": {"output_dir": str(tmp_path / "run"), "cpu": True, **train},
            "tracking": {"wandb": {"mode": "disabled"}},
        },
        "test",
    )


@pytest.mark.parametrize("n", [1000, 1001, 60000])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_epoch_indices_are_distributed_samplers(n: int, world: int) -> None:
    for epoch in (0, 1, 7):
        for rank in range(world):
            sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=5)
            sampler.set_epoch(epoch)
            assert epoch_order(n, epoch, 5, world).tolist()[rank::world] == list(sampler)  # this rank's share


@pytest.mark.parametrize("world", [1, 2])
def test_tensor_and_torchvision_paths_give_the_same_batches(mnist_root: Path, tmp_path: Path, world: int) -> None:
    """Real MNIST: the plan's tensor batches == a DataLoader over the same plan on torchvision's
    Dataset == a plain DataLoader over torch's DistributedSampler, every rank, two epochs."""
    job = classify_job(mnist_root, tmp_path)
    job.data.loader = "torchvision"  # the job asks for the DataLoader path (the tensor one has no Dataset)
    task = ClassifyTask(job)
    splits = task.load_data()
    dataset = task.torch_dataset(train=True)
    n, batch, seed, checked = len(splits.train[0]), 64, job.train.seed, 6
    plan = BatchPlan(n, batch * world, world_size=world, seed=seed)
    for epoch in (0, 1):
        for rank in range(world):
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
            sampler.set_epoch(epoch)
            reference = iter(DataLoader(dataset, batch_size=batch, sampler=sampler))
            steps = list(plan.steps(epoch, rank))
            classic = iter(DataLoader(dataset, batch_sampler=[m[0].tolist() for m in steps]))
            for i in range(checked):
                xf, yf = gather(splits.train, steps[i][0])
                (xc, yc), (xr, yr) = next(classic), next(reference)
                assert xf.dtype == torch.uint8 and xc.dtype == torch.float32
                assert torch.equal(yf, yc) and torch.equal(yf, yr)
                # The same pixels bit for bit once each path's batch becomes LSTM rows.
                assert torch.equal(as_rows(xf), as_rows(xc)) and torch.equal(as_rows(xc), as_rows(xr))
            resumed = next(plan.steps(epoch, rank, start=4))  # mid-epoch resume: the same 5th batch
            assert torch.equal(resumed[0], steps[4][0])
            assert len(steps) == plan.steps_in_epoch(epoch) == len(sampler) // batch + (len(sampler) % batch > 0)


def test_both_loaders_train_the_same_weights(fake_mnist: Path, tmp_path: Path) -> None:
    """The whole loop, both data paths, same seed: bit-identical weights after 12 steps."""
    from lstm_train.train import train

    results = {}
    for loader in ("tensor", "torchvision"):
        reset_accelerate()
        job = classify_job(fake_mnist, tmp_path / loader, max_steps=12, log_every=4, mixed_precision="no")
        spec = job.to_dict()
        spec["data"]["loader"] = loader
        results[loader] = train(validate_job(spec, "test"))
    reset_accelerate()
    assert results["tensor"]["steps"] == results["torchvision"]["steps"] == 12
    assert results["tensor"]["weights_sha1_per_rank"] == results["torchvision"]["weights_sha1_per_rank"]
    assert results["tensor"]["test_loss"] == results["torchvision"]["test_loss"]


def plan_samples(plan: BatchPlan, epoch: int) -> list[list[list[int]]]:
    """Per step, the sorted samples of each (rank, micro-batch) slot."""
    return [[sorted(m.tolist()) for r in range(plan.world_size) for m in plan.micro_batches(g, r)]
            for g in plan.global_batches(epoch)]


@pytest.mark.parametrize("lengths", [None, "random"])
@pytest.mark.parametrize("max_tokens", [None, 200])
def test_every_sample_once_equal_steps_and_deterministic(lengths: str | None, max_tokens: int | None) -> None:
    n = 1001
    lens = torch.randint(1, 40, (n,), generator=torch.Generator().manual_seed(3)) if lengths else None
    if max_tokens and lengths is None:  # a token budget needs lengths: refused, naming what is missing
        with pytest.raises(ValueError, match="max_tokens needs per-sample lengths"):
            BatchPlan(n, 24, lengths=None, max_tokens=max_tokens)
        return
    for world, accum in ((1, 1), (2, 1), (3, 2)):
        plan = BatchPlan(n, 24 * world * accum, world_size=world, accum=accum, seed=4, lengths=lens,
                         bucket_pool=5, max_tokens=max_tokens)
        for epoch in (0, 1):
            seen = []
            per_rank_steps = [list(plan.steps(epoch, r)) for r in range(world)]
            assert len({len(s) for s in per_rank_steps}) == 1  # every rank the same number of steps
            assert len(per_rank_steps[0]) == plan.steps_in_epoch(epoch)
            for step in zip(*per_rank_steps):  # one optimizer step: every rank's micro-batches
                sizes = [len(m) for micro in step for m in micro]
                assert len(sizes) == world * accum
                # balanced over ranks and micro-batches: equal, or within one where a token budget deals
                # the step's samples over the slots
                assert max(sizes) - min(sizes) <= (1 if max_tokens else 0), (world, accum, sizes)
            for rank_steps in per_rank_steps:
                for micro in rank_steps:
                    seen += [i for m in micro for i in m.tolist()]
            padded_total = -(-n // world) * world
            assert sorted(set(seen)) == list(range(n)) and len(seen) == padded_total  # padding repeats the head
            if max_tokens:
                for micro in per_rank_steps[0]:
                    for m in micro:  # within the budget unless one slot's share alone exceeds it
                        assert len(m) * int(lens[m].max()) <= max_tokens or len(m) == 1
        again = BatchPlan(n, 24 * world * accum, world_size=world, accum=accum, seed=4, lengths=lens,
                          bucket_pool=5, max_tokens=max_tokens)
        assert plan_samples(plan, 1) == plan_samples(again, 1)  # deterministic
        assert plan_samples(plan, 0) != plan_samples(plan, 1)  # reshuffled each epoch


def test_a_steps_samples_do_not_depend_on_the_world_size() -> None:
    """One process with two micro-batches, two processes with one, four with one: the same
    samples at every step, split into the same micro-batches."""
    n, g = 960, 48
    lens = torch.randint(1, 50, (n,), generator=torch.Generator().manual_seed(0))
    for lengths in (None, lens):
        layouts = [BatchPlan(n, g, world_size=w, accum=a, seed=9, lengths=lengths) for w, a in ((1, 2), (2, 1))]
        a, b = (plan_samples(p, 2) for p in layouts)
        assert [sorted(map(tuple, s)) for s in a] == [sorted(map(tuple, s)) for s in b]
        four = BatchPlan(n, g, world_size=4, seed=9, lengths=lengths)
        assert [sorted(sum(s, [])) for s in plan_samples(four, 2)] == [sorted(sum(s, [])) for s in a]


def test_bucketing_cuts_padding() -> None:
    n = 4000
    lens = torch.randint(1, 60, (n,), generator=torch.Generator().manual_seed(1))

    def padding(plan: BatchPlan) -> float:
        real = padded = 0
        for g in plan.global_batches(0):
            real += int(lens[g].sum())
            padded += len(g) * int(lens[g].max())
        return 1 - real / padded

    bucketed = padding(BatchPlan(n, 32, seed=1, lengths=lens, bucketing=True))
    random = padding(BatchPlan(n, 32, seed=1, lengths=lens, bucketing=False))
    assert bucketed < 0.05 < 0.3 < random


def test_token_budget_batches_and_eval_batches() -> None:
    order = torch.arange(10)
    lens = torch.tensor([1, 1, 2, 2, 3, 3, 4, 4, 9, 9])
    assert [b.tolist() for b in cut_by_tokens(order, lens, 8, 2)] == [[0, 1, 2, 3], [4, 5], [6, 7], [8, 9]]
    # eval: every sample once across ranks, sorted by length, no padding of the set
    for world in (1, 2, 3):
        got = sorted(i for r in range(world) for b in eval_batches(10, r, world, 3, lens) for i in b.tolist())
        assert got == list(range(10))
        got = sorted(i for r in range(world) for b in eval_batches(10, r, world, 3) for i in b.tolist())
        assert got == list(range(10))


def test_global_batch_layout_and_its_errors() -> None:
    data = DataBase(batch_size=64, global_batch_size=256)
    one, two = batch_layout(data, None, 1), batch_layout(data, None, 2)
    assert (one.micro, one.accum, one.global_batch) == (64, 4, 256)
    assert (two.micro, two.accum, two.global_batch) == (64, 2, 256)
    assert batch_layout(DataBase(batch_size=64), None, 2).global_batch == 128  # per process without it
    assert batch_layout(DataBase(batch_size=64, global_batch_size=96), None, 2).accum == 1
    assert batch_layout(DataBase(batch_size=10, global_batch_size=48), None, 2).micro == 8  # 24 = 3 x 8
    with pytest.raises(ConfigError, match="does not divide over 3 processes"):
        batch_layout(data, None, 3)
    with pytest.raises(ConfigError, match="train.grad_accum_steps = 3 does not divide"):
        batch_layout(data, 3, 2)
    # A token budget decides the batch, and the start-up line says so (not data.batch_size's samples)
    tokens = batch_layout(SequenceData(batch_size=64, max_tokens=1500), None, 2)
    assert tokens.describe() == "global batch up to 3000 padded tokens = 2 process(es) x 1500 (data.max_tokens per process)"


@pytest.mark.parametrize("lengths", [False, True])
def test_eval_batches_of_splits_smaller_than_the_world(lengths: bool) -> None:
    """A validation or test split with fewer samples than (a multiple of) the processes: every
    sample once, no rank fails, and no rank is handed an empty batch to run a model on."""
    for n in range(1, 12):
        lens = torch.arange(n) % 4 + 1 if lengths else None
        for world in (1, 2, 3, 4, 8):
            per_rank = [eval_batches(n, r, world, 2, lens) for r in range(world)]
            got = sorted(i for batches in per_rank for b in batches for i in b.tolist())
            assert got == list(range(n)), (n, world)
            assert all(len(b) for batches in per_rank for b in batches), (n, world)


def test_token_budget_counts_an_empty_sequence_as_one_token() -> None:
    """Samples of length zero still take a row of the batch: a budget of 8 tokens never
    becomes a batch of hundreds of rows because their longest sequence is empty."""
    lens = torch.tensor([0] * 300 + [3] * 20)
    for batches in (cut_by_tokens(torch.arange(320), lens, 8, 2),
                    BatchPlan(320, 8, world_size=2, seed=1, lengths=lens, max_tokens=8).global_batches(0)):
        assert sorted(i for b in batches for i in b.tolist()) == list(range(320))
        assert max(len(b) for b in batches) <= 2 * 8
