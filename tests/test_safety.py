"""Safe to share (issue 20): run files written privately and atomically, run directories of
others refused, no credential in anything written, check first and write after, one submit at
a time, every file read back validated, plain names."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lstm_train import runfiles
from lstm_train.config import validate_job

from .conftest import ROOT, job_env, run_cli

TEXT_JOB = "jobs/text_csv_example.yaml"
TINY = ["model.embedding_dim=8", "model.hidden_size=8", "data.batch_size=16", "train.epochs=1",
        "train.mixed_precision=no", "train.checkpoint_every=2"]


def reviews(path: Path, labels: tuple[str, ...] = ("pos", "neg"), n: int = 60) -> Path:
    words = {"pos": "great fine good", "neg": "dull bad awful", "mid": "so so okay"}
    rows = ["text,label"] + [f"{words[labels[i % len(labels)]]} film {i},{labels[i % len(labels)]}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------
# Files and directories


def test_a_symlink_at_a_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    # The old writer's name was predictable (.result.json.<pid>.tmp): plant a link there and at the target.
    (run / f".result.json.{os.getpid()}.tmp").symlink_to(victim)
    (run / "config.yaml").symlink_to(victim)
    runfiles.write_json(run / "result.json", {"ok": 1})
    runfiles.write_atomic(run / "config.yaml", "name: x\n")
    assert victim.read_text() == "keep me\n"
    assert not (run / "config.yaml").is_symlink() and (run / "config.yaml").read_text() == "name: x\n"
    # Whatever the name, creating a temporary never follows or reuses what is there.
    link = run / ".planted.tmp"
    link.symlink_to(victim)
    with pytest.raises(FileExistsError):
        runfiles.create_private(link)
    assert victim.read_text() == "keep me\n"
    # No temporaries left, and files are not readable by others.
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")) == sorted(
        [f".result.json.{os.getpid()}.tmp", ".planted.tmp"])
    assert stat.S_IMODE((run / "result.json").stat().st_mode) & 0o077 & ~0o040 == 0


def test_run_dirs_are_0750_or_narrower_as_the_umask_says(tmp_path):
    old = os.umask(0o022)
    try:
        made = runfiles.make_run_dir(tmp_path / "a" / "b")
        assert stat.S_IMODE(made.stat().st_mode) == 0o750 and stat.S_IMODE(made.parent.stat().st_mode) == 0o750
        os.umask(0o077)
        assert stat.S_IMODE(runfiles.make_run_dir(tmp_path / "c").stat().st_mode) == 0o700
        runfiles.write_json(tmp_path / "c" / "x.json", {})
        assert stat.S_IMODE((tmp_path / "c" / "x.json").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_run_dir_of_another_user_is_refused(tmp_path):
    assert os.geteuid() == 0, "this test chowns a directory to nobody: run the suite as root (CI does)"
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    import pwd

    os.chown(theirs, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(runfiles.UnsafeRunDir, match="belongs to user nobody"):
        runfiles.make_run_dir(theirs)
    data = reviews(tmp_path / "r.csv")
    done = run_cli("run", TEXT_JOB, f"data.path={data}", f"train.output_dir={theirs}", *TINY,
                   "tracking.wandb.mode=disabled", timeout=300)
    assert done.returncode == 2 and "belongs to user nobody" in done.stderr, done.stderr[-2000:]
    assert list(theirs.iterdir()) == []

    everyone = tmp_path / "everyone"
    everyone.mkdir()
    everyone.chmod(0o777)
    with pytest.raises(runfiles.UnsafeRunDir, match="writable by every user"):
        runfiles.check_run_dir(everyone)
    group = tmp_path / "group"
    group.mkdir()
    group.chmod(0o770)
    with pytest.warns(UserWarning, match="writable by its group"):
        runfiles.check_run_dir(group)


# ---------------------------------------------------------------------------
# Secrets


def test_redaction_and_the_setup_warning():
    spec = {"name": "x", "data": {"tokenizer": "words", "max_tokens": 5},
            "slurm": {"setup": ["export WANDB_API_KEY=abc123", "module load cuda", "HF_TOKEN='t 1' run"],
                      "additional": {"api_key": "zz"}}}
    out = runfiles.redact(spec)
    assert out["data"] == spec["data"] and out["slurm"]["setup"] == [
        "export WANDB_API_KEY=<redacted>", "module load cuda", "HF_TOKEN=<redacted> run"]
    assert out["slurm"]["additional"]["api_key"] == "<redacted>"
    assert set(runfiles.shareable(spec)) == {"name", "data"}
    with pytest.warns(UserWarning, match="slurm.setup exports WANDB_API_KEY"):
        validate_job({"name": "x", "task": "text_classify", "data": {"source": "files", "path": "a.csv"},
                      "slurm": {"setup": ["export WANDB_API_KEY=abc123"]}}, "test")


def test_no_credential_in_any_file_written(tmp_path):
    key, token = "0123456789abcdef0123456789abcdef01234567", "hf_SeCrEtToKeN42"
    env = {**job_env(tmp_path, tmp_path), "WANDB_API_KEY": key, "WANDB_MODE": "offline"}
    data = reviews(tmp_path / "r.csv")
    run, wandb_dir = tmp_path / "run", tmp_path / "wandb"
    wandb_dir.mkdir()
    done = run_cli("run", TEXT_JOB, f"data.path={data}", f"train.output_dir={run}", *TINY,
                   "tracking.wandb.mode=offline", f"tracking.wandb.dir={wandb_dir}",
                   f"slurm.setup=[\"export HF_TOKEN={token}\", \"export WANDB_API_KEY={key}\"]",
                   env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "slurm.setup exports HF_TOKEN, WANDB_API_KEY" in done.stderr
    files = [p for folder in (run, wandb_dir) for p in folder.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".wandb") for p in files) and (run / "config.yaml").is_file()
    leaks = [str(p) for p in files if key.encode() in p.read_bytes() or token.encode() in p.read_bytes()]
    assert leaks == []


# ---------------------------------------------------------------------------
# Check first, write after


def test_a_refused_resume_leaves_the_run_dir_byte_identical(tmp_path):
    two = reviews(tmp_path / "two.csv")
    three = reviews(tmp_path / "three.csv", ("pos", "neg", "mid"))
    run = tmp_path / "run"
    done = run_cli("run", TEXT_JOB, f"data.path={two}", f"train.output_dir={run}", *TINY,
                   "tracking.wandb.mode=disabled", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run / "result.json").unlink()  # as if it had been interrupted
    before = tree_hashes(run)
    for changed in ([f"data.path={three}"], [f"data.path={two}", "model.hidden_size=12"]):
        refused = run_cli("run", TEXT_JOB, f"train.output_dir={run}", *TINY, "tracking.wandb.mode=disabled",
                          *changed, timeout=300)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "classes" in refused.stderr or "model.hidden_size: 8 -> 12" in refused.stderr, refused.stderr[-2000:]
        assert tree_hashes(run) == before


def test_concurrent_submits_one_is_accepted(cluster, tmp_path, slurm_env, jobs):
    from .slurm_helpers import JOB, job_ids

    run = tmp_path / "run"
    # Each submit reads its job file from a named pipe: all four block there, after their imports,
    # until the pipes are written at once, so they race for the run directory in the same instant.
    pipes = [tmp_path / f"job{i}.yaml" for i in range(4)]
    procs = []
    for pipe in pipes:
        os.mkfifo(pipe)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "lstm_train", "submit", str(pipe), f"train.output_dir={run}", "train.max_steps=5",
             "tracking.wandb.mode=disabled", "slurm.time_min=5", "--executor", "slurm"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slurm_env, cwd=ROOT))
    spec = JOB.read_text()
    writers = [open(pipe, "w") for pipe in pipes]  # each open returns once its reader is there
    for w in writers:
        w.write(spec)
    for w in writers:
        w.close()
    outs = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    ids = job_ids(run)
    jobs.extend(ids)
    submitted = [line.split()[4] for _, out, _ in outs for line in out.splitlines() if line.startswith("submitted ")]
    jobs.extend(submitted)
    assert sorted(rc for rc, _, _ in outs) == [0, 2, 2, 2], outs
    assert len(submitted) == 1 and ids == submitted, (ids, submitted)
    for rc, _, err in outs:
        assert rc == 0 or f"belongs to job {ids[0]}" in err, err


# ---------------------------------------------------------------------------
# Files read back: validated, a clear error naming file and field


@pytest.mark.parametrize("name, content, message", [
    ("result.json", "{not json", "result.json: not valid JSON"),
    ("result.json", '["a list"]', "result.json: expected a JSON object"),
    ("result.json", '{"steps": "many"}', "result.json: field 'steps' should be int"),
    ("config.yaml", "name: [unclosed", "config.yaml: not valid YAML"),
    ("config.yaml", "- a\n- list\n", "config.yaml: expected a mapping"),
])
def test_hand_edited_run_files_are_clear_errors(tmp_path, name, content, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text('{"steps": 1}')
    (run / name).write_text(content)
    with pytest.raises(runfiles.RunDirError, match=message.replace("[", r"\[")):
        runfiles.read_json(run / "result.json", runfiles.RESULT_FIELDS)
        runfiles.read_config(run / "config.yaml")


def test_hand_edited_submission_and_result_through_the_cli(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "submission.json").write_text('{"kind": "run", "job_ids": "12345"}')
    status = run_cli("status", str(run))
    assert status.returncode == 2 and "submission.json: field 'job_ids'" in status.stderr, status.stderr[-2000:]
    data = reviews(tmp_path / "r.csv")
    (run / "result.json").write_text("{truncated")
    done = run_cli("run", TEXT_JOB, f"data.path={data}", f"train.output_dir={run}", *TINY,
                   "tracking.wandb.mode=disabled", timeout=300)
    assert done.returncode == 2 and "result.json: not valid JSON" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------
# Plain names


@pytest.mark.parametrize("override", ["train.run_id=../../etc", "train.run_id=/tmp/x", "name=..", "train.run_id=a/b"])
def test_run_ids_and_names_are_plain_names(override):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = run_cli("run", TEXT_JOB, "data.path=x.csv", override)
    assert done.returncode == 2 and "is not a plain name" in done.stderr, done.stderr[-2000:]


# ---------------------------------------------------------------------------
# Bounds


def test_a_thousand_class_text_job_writes_its_result(tmp_path):
    classes = 1000
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"word{i} common,c{i}\n" for i in range(classes) for _ in range(2)))
    test = tmp_path / "test.csv"
    test.write_text("text,label\n" + "".join(f"word{i} common,c{i}\n" for i in range(0, classes, 3)))
    run = tmp_path / "run"
    done = run_cli("run", TEXT_JOB, "data.path=null", f"data.train_path={train}", f"data.test_path={test}",
                   f"train.output_dir={run}", *TINY, "data.batch_size=256", "tracking.wandb.mode=disabled", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert len(result["test_per_class"]) >= classes // 3 and 0 <= result["test_macro_f1"] <= 1
    assert "test_confusion_matrix" not in result and not (run / "confusion_matrix.png").exists()
    assert "1,000 classes: no confusion matrix figure" in done.stdout + done.stderr


def test_jsonl_labels_one_value_one_class(tmp_path):
    from lstm_train.data.readers import textfiles

    path = tmp_path / "l.jsonl"
    path.write_text('{"t": "a", "y": 1}\n{"t": "b", "y": 1.0}\n{"t": "c", "y": "1"}\n{"t": "d", "y": 2.5}\n')
    table = textfiles.read_table(path, "t", "y")
    assert table.labels == ["1", "1", "1", "2.5"] and textfiles.label_classes(table.labels) == ["1", "2.5"]


def test_a_wide_csv_header_makes_a_short_message(tmp_path):
    from lstm_train.data.readers import textfiles

    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"column_{i}_{'x' * 50}" for i in range(20_000)) + "\n" + ",".join(["v"] * 20_000) + "\n")
    with pytest.raises(textfiles.TextDataError) as e:
        textfiles.read_table(path, "text", "label")
    assert "no column 'text'" in str(e.value) and "(20,000 in all)" in str(e.value) and len(str(e.value)) < 2000


def test_min_freq_that_leaves_only_special_tokens():
    from lstm_train.data.vocab import DEFAULT_MAX_SIZE, Vocab, VocabError

    with pytest.raises(VocabError, match="data.min_freq=5 leaves no word in the vocabulary"):
        Vocab.train([["a", "b"], ["a"]], min_freq=5)
    assert len(Vocab.train([[f"w{i}" for i in range(DEFAULT_MAX_SIZE + 10)]])) == DEFAULT_MAX_SIZE


def png_declaring(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit gray
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_decompression_bomb_png_is_refused_before_decoding(tmp_path):
    import resource

    from lstm_train.data.readers import images
    from lstm_train.tasks.caption import load_strip

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(200_000, 200_000))  # 40 gigapixels in a few hundred bytes
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(images.ImageTooLarge, match=r"bomb.png: 200,000 x 200,000 pixels, over the limit of 25,000,000"):
        images.open_image(bomb)
    with pytest.raises(images.ImageTooLarge, match="bomb.png: 200,000 x 200,000 pixels"):
        load_strip(str(bomb), 28, 140, 5)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing decoded
    small = tmp_path / "ok.png"
    small.write_bytes(png_declaring(28, 28))
    with images.open_image(small) as img:
        assert img.size == (28, 28)


def test_gzip_decompression_is_bounded(tmp_path, monkeypatch):
    import gzip

    from lstm_train.data.readers import idx

    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0" * (4 << 20)))  # 4 MB of zeros in a few KB
    monkeypatch.setattr(idx, "MAX_BYTES", 1 << 20)
    with pytest.raises(idx.IdxError, match="over 1,048,576 bytes once decompressed"):
        idx.read_idx(path)


def test_predict_a_one_gigabyte_line_is_cut_and_said(tmp_path):
    data = reviews(tmp_path / "r.csv")
    run = tmp_path / "run"
    done = run_cli("run", TEXT_JOB, f"data.path={data}", f"train.output_dir={run}", *TINY, "data.max_length=16",
                   "tracking.wandb.mode=disabled", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:  # sparse: 1 GiB on one line, the disk holds a few KB
        f.write(b"great film " * 1000)
        f.truncate(1 << 30)
    script = ("import resource, sys; from lstm_train.cli import main; code = main(sys.argv[1:]); "
              "print('maxrss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)")
    said = subprocess.run([sys.executable, "-c", script, "predict", str(run), "--file", str(big)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, env={**os.environ, "WANDB_MODE": "disabled"})
    assert said.returncode == 0, said.stderr[-3000:]
    assert f"big.txt:1: a line of {1 << 30:,} bytes; read its first 1,048,576 only" in said.stderr
    assert "predict: cut 1 of 1 texts to data.max_length=16 words" in said.stderr
    line = said.stdout.splitlines()[0]
    assert len(line) < 500 and line.split("\t")[0] in ("pos", "neg")
    maxrss = int(said.stderr.split("maxrss_kib")[1].split()[0])
    assert maxrss < 2_000_000, maxrss  # KiB: far under the 1 GiB line


def test_command_line_values_are_validated_as_the_schema_does(tmp_path):
    data = reviews(tmp_path / "r.csv")
    run = tmp_path / "run"
    assert run_cli("run", TEXT_JOB, f"data.path={data}", f"train.output_dir={run}", *TINY,
                   "tracking.wandb.mode=disabled", timeout=300).returncode == 0
    said = run_cli("predict", str(run), "--text", "good", "--beam", "0")
    assert said.returncode == 2 and "--beam does not apply to a text_classify run" in said.stderr, said.stderr[-2000:]


# ---------------------------------------------------------------------------
# Between ranks: JSON bytes in tensors, never pickles


def _exchange(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch

    from lstm_train import checkpoint
    from lstm_train.distributed import broadcast_object, gather_objects, make_accelerator

    accelerator = make_accelerator(force_cpu=True)
    torch.manual_seed(rank)
    mine = {"rng": checkpoint.rng_state(), "counts": {"samples": rank + 1}, "path": Path(f"/r{rank}")}
    gathered = gather_objects(accelerator, mine)
    told = broadcast_object(accelerator, {"step": 7, "metrics": {"acc": 0.5}, "who": rank} if rank == 0 else None)
    ok = (len(gathered) == world and [g["counts"]["samples"] for g in gathered] == [1, 2]
          and torch.equal(gathered[rank]["rng"]["torch"], mine["rng"]["torch"])
          and isinstance(gathered[1]["rng"]["python"]["state"], torch.Tensor) and gathered[1]["path"] == Path("/r1")
          and told == {"step": 7, "metrics": {"acc": 0.5}, "who": 0})
    checkpoint.set_rng_state(gathered[rank]["rng"])  # what resume does with them
    Path(out, f"rank{rank}").write_text("ok" if ok else repr((gathered, told)))
    torch.distributed.destroy_process_group()


def test_ranks_exchange_json_not_pickles(tmp_path):
    import torch.multiprocessing as mp

    from lstm_train.distributed import from_wire, to_wire

    from .conftest import free_port

    mp.spawn(_exchange, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"rank{r}").read_text() for r in range(2)] == ["ok", "ok"]

    class Anything:
        pass

    with pytest.raises(TypeError, match="cannot send a Anything between ranks"):
        to_wire(Anything())
    planted = tmp_path / "ran"
    rogue = f"cos\nsystem\n(S'touch {planted}'\ntR.".encode()  # a pickle that would run a command
    with pytest.raises(ValueError):
        from_wire(rogue)
    assert not planted.exists()
    import lstm_train.distributed as d

    source = Path(d.__file__).read_text()
    assert "all_gather_object(" not in source and "broadcast_object_list(" not in source
