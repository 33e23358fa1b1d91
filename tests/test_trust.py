"""Issue 27 on real files and a real second user: nothing another user plants in a cache is
trained on; manifest names stay in their entry; a lock is never followed through a symlink; an
in-place edit with size and mtime kept is noticed; a damaged entry is moved aside and prepared
again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import re
from typing import Any

import numpy as np
import pytest
import torch

from lstm_train import runlock
from lstm_train.data.store import entry_format, prepared, trust
from lstm_train.data.lm_tokenizer import Tokenizer
from lstm_train.tasks.language_model import _sample, generate

from .conftest import ROOT, run_cli
from .test_prepared import entries, same_splits, spec, task_of, write_csv


def as_nobody(*command: str) -> None:
    """`command` run by the unprivileged local user `nobody` (we are root here and in CI)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.fail("these tests need root and setpriv to act as a second local user (nobody)")
    subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command], check=True)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A /tmp-like shared folder: world-writable and sticky, reachable by every user."""
    path = Path("/tmp") / f"lstm-trust-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def poisoned_copy(entry: Path, into: Path) -> Path:
    """A copy of `entry` in `into` (world-readable) with every training label flipped."""
    copy = into / entry.name
    shutil.copytree(entry, copy)
    labels = copy / "train.1.npy"
    np.save(labels, 1 - np.load(labels), allow_pickle=False)
    for p in [copy, *copy.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return copy


def test_an_entry_planted_by_another_user_is_never_trained_on(tmp_path: Path, shared: Path) -> None:
    path = write_csv(shared / "d.csv")
    path.chmod(0o644)
    mine = shared / "mine"  # the victim's own cache (0755), in a place the other user can reach
    good = prepared.load(task_of(path, mine))
    [entry] = entries(mine)
    staging = shared / "staging"
    staging.mkdir(mode=0o755)
    planted = poisoned_copy(entry, staging)
    # 1. the job names a folder in a shared place that another user created first
    team = shared / "team"
    as_nobody("mkdir", "-m", "755", str(team))
    as_nobody("cp", "-r", str(planted), str(team))
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps(spec(path, team)))
    proc = run_cli("prepare", str(job))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{team} (data.cache_dir) belongs to user nobody" in proc.stderr and "data.cache_group" in proc.stderr
    # 2. the shared folder itself as the cache: anyone can write there
    as_nobody("cp", "-r", str(planted), str(shared))
    with pytest.raises(trust.UntrustedCache, match="is writable by every user"):
        prepared.load(task_of(path, shared))
    # 3. the victim's own cache, briefly opened to others: the planted entry is moved aside, not read
    mine.chmod(0o777)
    shutil.rmtree(entry)
    as_nobody("cp", "-r", str(planted), str(mine))
    mine.chmod(0o755)
    again = prepared.load(task_of(path, mine))
    assert same_splits(good, again) and (entry / "train.1.npy").stat().st_uid == os.geteuid()
    assert [p.stat().st_uid for p in (mine / ".aside").iterdir()] == [__import__("pwd").getpwnam("nobody").pw_uid]


def test_a_named_cache_group_trusts_that_group_only(tmp_path: Path) -> None:
    path, cache = write_csv(tmp_path / "d.csv"), tmp_path / "cache"
    cache.mkdir(mode=0o770)
    cache.chmod(0o770)
    with pytest.raises(trust.UntrustedCache, match="writable by its group .* data.cache_group"):
        prepared.load(task_of(path, cache))
    group = __import__("grp").getgrgid(cache.stat().st_gid).gr_name
    prepared.load(task_of(path, cache, cache_group=group))
    with pytest.raises(trust.UntrustedCache, match="no group named 'no-such-group'"):
        prepared.load(task_of(path, cache, cache_group="no-such-group"))


def test_a_manifest_name_outside_the_entry_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, cache = write_csv(tmp_path / "d.csv"), tmp_path / "cache"
    good = prepared.load(task_of(path, cache))
    [entry] = entries(cache)
    outside = tmp_path / "outside.npy"
    shutil.copy(entry / "train.1.npy", outside)
    manifest = json.loads((entry / entry_format.MANIFEST).read_text())
    manifest["splits"]["train"][1]["file"] = str(outside)
    (entry / entry_format.MANIFEST).write_text(json.dumps(manifest))
    capsys.readouterr()
    again = prepared.load(task_of(path, cache))
    err = capsys.readouterr().err
    assert f"is not a plain name inside the entry" in err and str(entry) in err, err
    assert same_splits(good, again)
    for bad in ("../x.npy", "/etc/passwd", "a/b", "..", "", 3, None):
        with pytest.raises(entry_format.DamagedEntry):
            entry_format.safe_name(bad)


def test_a_lock_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    path, cache = write_csv(tmp_path / "d.csv"), tmp_path / "cache"
    entry = prepared.locate(task_of(path, cache))
    victim = tmp_path / "precious"
    victim.write_text("keep me")
    lock = prepared.lock_path(entry)
    lock.symlink_to(victim)
    with pytest.raises(trust.UntrustedCache, match=r"lock file .* is a symlink"):
        prepared.load(task_of(path, cache))
    assert victim.read_text() == "keep me" and not entry.folder.exists()


def test_the_lock_names_its_holder_the_wait_is_bounded_and_a_dead_holder_is_taken_over(tmp_path: Path) -> None:
    """The entry lock is the run lock's hard-linked lock file (safe on NFS and Lustre, unlike
    flock): a live holder in another process is named and waited for until data.prepare_timeout;
    once that process is killed (its lock left behind) the next preparation takes the lock over."""
    path, cache = write_csv(tmp_path / "d.csv"), tmp_path / "cache"
    entry = prepared.locate(task_of(path, cache))
    lock = prepared.lock_path(entry)
    holder = subprocess.Popen([sys.executable, "-c", f"""
import time
from pathlib import Path
from lstm_train import runlock
taken, _ = runlock.take(Path({str(lock)!r}), "unused", mode=0o640)
print("held" if taken else "not taken", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert oct(lock.stat().st_mode & 0o777) == "0o640"  # the cache's group can read who holds it
        with pytest.raises(prepared.PreparedDataError, match=rf"waited 1 s \(data.prepare_timeout\) for pid "
                                                             rf"{holder.pid} on host "):
            prepared.load(task_of(path, cache, prepare_timeout=1))
    finally:
        holder.kill()
        holder.wait()
    assert lock.exists() and not entry.folder.exists()  # a killed holder's lock stays: no flock to drop it
    with pytest.warns(runlock.StaleLockWarning, match=rf"taking over .* pid {holder.pid} no longer runs"):
        splits = prepared.load(task_of(path, cache, prepare_timeout=1))
    assert splits.train is not None and entry.folder.is_dir() and not lock.exists()
    lock.write_text('{"pid": "1; rm -rf", "host": 7}')  # a hand-edited holder: read by type, refused
    with pytest.raises(prepared.PreparedDataError, match=r"unreadable lock file; delete it if no preparation of "):
        prepared.load(task_of(path, cache, prepare_timeout=1))


def test_an_in_place_edit_with_size_and_mtime_kept_is_noticed(tmp_path: Path) -> None:
    path, cache = write_csv(tmp_path / "d.csv"), tmp_path / "cache"
    prepared.load(task_of(path, cache))
    st = path.stat()
    text = path.read_text()
    path.write_text(text.replace("good", "baad", 1).replace("bad", "goo", 1))  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    prepared.load(task_of(path, cache))
    assert len(entries(cache)) == 2  # a new content digest: a new entry, the old one not reused


def damage_entry(entry: Path, damage: str) -> None:
    manifest = json.loads((entry / entry_format.MANIFEST).read_text())
    spec_ = manifest["splits"]["train"][1]
    if damage == "shape":
        spec_["shape"] = [spec_["shape"][0] + 1]
    elif damage == "terabyte":
        raw = (entry / spec_["file"]).read_bytes()
        size = 10 + int.from_bytes(raw[8:10], "little")  # a version 1.0 header: keep its length
        old, new = f"({spec_['shape'][0]},)".encode(), b"(" + b"1" + b"0" * 12 + b",)"
        header = raw[:size].replace(old, new).replace(b" " * (len(new) - len(old)) + b"\n", b"\n")
        assert len(header) == size
        (entry / spec_["file"]).write_bytes(header + raw[size:])
        spec_["shape"] = [10 ** 12]
    elif damage == "object":
        np.save(entry / spec_["file"], np.array([object()] * spec_["shape"][0]), allow_pickle=True)
    elif damage == "types":
        spec_["bytes"] = "12"
    (entry / entry_format.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", ["shape", "terabyte", "object", "types"])
def test_a_damaged_entry_is_one_line_moved_aside_and_prepared_again(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                    damage: str) -> None:
    path, cache = write_csv(tmp_path / "d.csv"), tmp_path / "cache"
    good = prepared.load(task_of(path, tmp_path / "reference"))  # an entry of its own
    prepared.load(task_of(path, cache))
    [entry] = entries(cache)
    damage_entry(entry, damage)
    capsys.readouterr()
    again = prepared.load(task_of(path, cache))
    err = capsys.readouterr().err
    [line] = [x for x in err.splitlines() if "unusable" in x]
    assert str(entry) in line and "moved to" in line and "preparing it again" in line, err
    expected = {"shape": "the manifest says", "terabyte": "the header claims", "object": "Python objects",
                "types": "bytes is str"}[damage]
    assert expected in line, line
    assert same_splits(good, again) and len(list((cache / ".aside").iterdir())) == 1


BOMB = "".join(f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def test_a_yaml_alias_bomb_is_refused_in_seconds_with_bounded_memory(tmp_path: Path) -> None:
    import resource
    import time

    job = tmp_path / "bomb.yaml"
    job.write_text('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + BOMB + "task: text_classify\n")
    started = time.monotonic()
    proc = run_cli("run", str(job), timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{job}: not valid YAML: its aliases expand to more than" in proc.stderr
    value = "[&a [1,1,1,1,1,1,1,1,1], " + ", ".join(f"&{c} [{','.join([f'*{p}'] * 9)}]"
                                                      for p, c in zip("abcde", "bcdef")) + "]"
    proc = run_cli("run", str(ROOT / "jobs" / "mnist_lstm.yaml"), f"train.epochs={value}", timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "override value '[&a" in proc.stderr and "alias bomb" in proc.stderr
    assert time.monotonic() - started < 60
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 2 << 20  # KiB: under 2 GiB


@pytest.mark.parametrize("sweep", [
    {"grid": {"train.lr": list(range(200)), "train.seed": list(range(200)), "model.hidden_size": list(range(1, 201))}},
    {"method": "random", "count": 1_000_000, "parameters": {"train.lr": {"min": 0.001, "max": 0.1}}},
])
def test_a_sweep_too_large_is_refused_before_expansion(tmp_path: Path, sweep: dict) -> None:
    import time

    from lstm_train.config import load_job
    from lstm_train.schema import ConfigError

    job = tmp_path / "sweep.yaml"
    job.write_text(json.dumps({"task": "text_classify", "sweep": sweep}))
    started = time.monotonic()
    with pytest.raises(ConfigError, match="a sweep runs at most 10000 points; (its grid has 8000000 points|"
                                          "sweep.count is 1000000)"):
        load_job(job)
    assert time.monotonic() - started < 5


def test_export_never_overwrites_a_checkpoint_or_an_output_without_force(tmp_path: Path) -> None:
    from lstm_train.config import load_job
    from lstm_train.train import train

    run = tmp_path / "run"
    train(load_job(str(ROOT / "jobs" / "sine_forecast.yaml"), [
        "data.sine.series=4", "data.sine.length=300", "data.val_size=40", "data.test_size=60", "model.hidden_size=8",
        "train.max_steps=4", "tracking.wandb.mode=disabled", "train.mixed_precision=no", f"train.output_dir={run}"]))
    checkpoint = sorted(run.glob("checkpoints/*/model.safetensors"))[0]
    kept = checkpoint.read_bytes()
    proc = run_cli("export", str(run), "--format", "onnx", "--out", str(checkpoint), "--force")
    assert proc.returncode == 2 and "inside the run's checkpoints" in proc.stderr and "Traceback" not in proc.stderr
    assert checkpoint.read_bytes() == kept
    out = tmp_path / "mine.onnx"
    out.write_text("precious")
    proc = run_cli("export", str(run), "--format", "onnx", "--out", str(out))
    assert proc.returncode == 2 and f"{out} exists; not overwriting it (pass --force" in proc.stderr, proc.stderr
    assert out.read_text() == "precious"
    proc = run_cli("export", str(run), "--format", "onnx", "--out", str(out), "--force")
    assert proc.returncode == 0 and out.read_bytes() != b"precious", proc.stderr[-2000:]


def test_jobs_copy_into_a_folder_never_through_a_dangling_symlink(tmp_path: Path) -> None:
    proc = run_cli("jobs", "copy", "mnist_lstm", "new/", cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "new" / "mnist_lstm.yaml").is_file(), proc.stderr
    (tmp_path / "link.yaml").symlink_to(tmp_path / "nowhere" / "x.yaml")
    proc = run_cli("jobs", "copy", "mnist_lstm", "link.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "link.yaml exists; not overwriting it" in proc.stderr
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "mine.yaml").write_text("mine")
    assert run_cli("jobs", "copy", "mnist_lstm", "mine.yaml", cwd=tmp_path).returncode == 2
    assert (tmp_path / "mine.yaml").read_text() == "mine"


class TinyLM(torch.nn.Module):
    """A real (untrained) LSTM language model: logits over the vocabulary and a state."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.lstm, self.head = torch.nn.Embedding(vocab, 8), torch.nn.LSTM(8, 8, batch_first=True), \
            torch.nn.Linear(8, vocab)

    def forward(self, ids: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        out, state = self.lstm(self.embed(ids), state)
        return self.head(out), state


class CountingTokenizer(Tokenizer):
    """The real tokenizer, counting the ids it is asked to decode (the work `generate` does)."""

    decoded = 0
    longest = 0

    def decode(self, ids: list[int]) -> str:
        CountingTokenizer.decoded += len(ids)
        CountingTokenizer.longest = max(CountingTokenizer.longest, len(ids))
        return super().decode(ids)


def _sampled_ids(model: torch.nn.Module, tok: Tokenizer, prompt: str, n: int) -> list[int]:
    """The ids `_sample` draws (same seed, same model), decoded by nobody."""
    generator, ids, out = torch.Generator().manual_seed(3), tok.encode(prompt, "p").tolist(), []
    with torch.no_grad():
        logits, state = model(torch.tensor([ids]), None)
        for _ in range(n):
            out.append(int(torch.multinomial((logits[0, -1].float() / 1.0).softmax(0), 1, generator=generator)))
            logits, state = model(torch.tensor([[out[-1]]]), state)
    return out


@pytest.mark.parametrize("kind", ["bytes", "chars", "words", "bpe"])
def test_generate_decodes_each_token_a_bounded_number_of_times(kind: str) -> None:
    text = "héllo wörld, the cat sat on the mat.\nthe dog ate the hat; ünïcode ok\n" * 5
    real = Tokenizer.train(kind, text, text, 300)
    tok = CountingTokenizer(real.kind, real.vocab, real.bpe_json)
    model = TinyLM(256 if kind == "bytes" else len(tok.vocab) if tok.vocab else 300)
    for n in (30, 300):
        CountingTokenizer.decoded = 0
        pieces = list(generate(model, tok, "the", n, 1.0, None, 3))
        # each decode sees a bounded window (one token of context + at most 8 pending): linear in n
        assert CountingTokenizer.longest <= 9 and CountingTokenizer.decoded <= 18 * n, CountingTokenizer.decoded
    out = list(_sample(model, real, real.encode("the", "p").tolist(), 300, 1.0, None, 3, joined=False))
    assert "".join(pieces) == "".join(out)  # the counting tokenizer changed nothing
    ids = _sampled_ids(model, real, "the", 300)
    if kind != "words":  # the pieces add up to the whole output decoded at once
        assert "".join(pieces) == real.decode(ids)
    assert len("".join(out)) > 0


def test_generated_words_follow_the_prompt_as_the_tokenizer_splits_them() -> None:
    """A words model's first word is a word of its own after the prompt ("the lord of", never
    "the lordof"), and none is added after a prompt that ends in white space."""
    text = "the lord of the house sat on the mat\nthe dog ate the hat\n" * 5
    words = Tokenizer.train("words", text, text, 300)
    model = TinyLM(len(words.vocab))
    for prompt in ("the lord", "the lord ", "the lord\n"):
        said = "".join(generate(model, words, prompt, 20, 1.0, None, 3))
        whole = prompt + said
        assert said and (said[0] != " " if prompt[-1].isspace() else said[0] in " \n"), repr(whole)
        assert all(w in words.vocab for w in whole.split()), repr(whole)


@pytest.mark.parametrize("flag,value,message", [
    ("--temperature", "nan", "--temperature nan: must be a finite number > 0"),
    ("--temperature", "inf", "--temperature inf: must be a finite number > 0"),
    ("--seed", str(2**64), f"--seed {2**64}: must be between 0 and 2**63 - 1"),
    ("--tokens", "0", "--tokens 0: must be between 1 and 100000"),
    ("--tokens", "-5", "--tokens -5: must be between 1 and 100000"),
    ("--tokens", "100001", "--tokens 100001: must be between 1 and 100000"),
])
def test_generate_bad_options_name_the_flag(flag: str, value: str, message: str) -> None:
    real = Tokenizer.train("chars", "abc abc\n", "abc abc\n", 0)
    options = {"--temperature": 1.0, "--seed": 1, "--tokens": 5, flag: float(value) if flag == "--temperature"
               else int(value)}
    with pytest.raises(ValueError, match=re.escape(message)):
        generate(TinyLM(len(real.vocab)), real, "a", options["--tokens"], options["--temperature"], None,
                 options["--seed"])


def test_a_lock_json_with_fields_of_the_wrong_type_is_a_clear_error(tmp_path: Path) -> None:
    from lstm_train.runlock import LOCK, RunLock, RunLocked

    (tmp_path / LOCK).write_text(json.dumps({"host": ["x"], "pid": "12", "since": 5, "token": None}))
    with pytest.raises(RunLocked, match=rf"{tmp_path / LOCK}: unreadable lock file; delete it"):
        RunLock.acquire(tmp_path)


def test_cp1252_text_declared_latin1_is_warned_about_once_naming_the_file(tmp_path: Path) -> None:
    import warnings

    from lstm_train.data.readers.textfiles import read_lines

    path = tmp_path / "quotes.txt"
    path.write_bytes("plain line\n\u201cquoted\u201d \u2013 twice\nand \u201cagain\u201d\n".encode("cp1252"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lines = list(read_lines(path, "latin-1")) + list(read_lines(path, "latin-1"))
        list(read_lines(path, "cp1252"))
    assert len(lines) == 6
    [warning] = [str(w.message) for w in caught]
    assert f"{path}:2: read as latin-1" in warning and "U+0093" in warning and "data.encoding: cp1252" in warning
