"""The benchmark book (scripts/book.py): names, records, BENCHMARKS.md, interruption, a busy machine.

Real subprocesses and real files: the book runs its cheap `self_check` entry (and, interrupted,
the `test_sleep` entry that exists only with LSTM_TRAIN_BOOK_TEST=1) into a temporary records
folder (`--dir`), with a temporary work folder; nothing here measures a speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "scripts" / "book.py"


def book(*args: str, tmp: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BOOK), "--dir", str(tmp / "benchmarks"), "--work", str(tmp / "work"),
                           "--settle", "0", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def load_book():
    if "lstm_train_book" not in sys.modules:  # registered first: its dataclasses look their module up
        spec = importlib.util.spec_from_file_location("lstm_train_book", BOOK)
        module = importlib.util.module_from_spec(spec)
        sys.modules["lstm_train_book"] = module
        spec.loader.exec_module(module)
    return sys.modules["lstm_train_book"]


def records(tmp: Path) -> list[Path]:
    return sorted((tmp / "benchmarks").glob("*.json")) if (tmp / "benchmarks").exists() else []


def test_an_unknown_entry_is_a_clear_error_naming_the_entries(tmp_path: Path) -> None:
    proc = book("generate", "nosuch", tmp=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("book: unknown entry 'nosuch'; entries: bench_mnist, ")
    listed = proc.stderr.split("entries: ", 1)[1].split(" (or all;")[0].split(", ")
    assert listed == [e.name for e in load_book().ENTRIES]  # every entry, in the book's order
    assert records(tmp_path) == [] and not (tmp_path / "work").exists()  # nothing ran


def test_list_names_every_entry_with_its_duration() -> None:
    proc = subprocess.run([sys.executable, str(BOOK), "--list"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0
    book_ = load_book()
    for entry in book_.ENTRIES:
        assert f"  {entry.name} " in proc.stdout
    assert "lm_char_best" in proc.stdout and "LONG" in proc.stdout  # long entries said so
    assert "[needs SLURM]" in proc.stdout and "[not in the default set: name it]" in proc.stdout
    assert "test_sleep" not in proc.stdout  # the tests' entry exists only with LSTM_TRAIN_BOOK_TEST=1
    assert "default set: about" in proc.stdout
    assert "group bench_lm: bench_lm_char bench_lm_files bench_lm_wikitext2" in proc.stdout


def test_bench_lm_names_the_three_language_model_benches(tmp_path: Path) -> None:
    """`bench_lm` (issue 38) runs the bench on every shipped LM job; wikitext2_awd_lstm on a corpus in
    WikiText-2's layout generated in the work folder first, then read through data.root."""
    book_ = load_book()
    assert [e.name for e in book_.select(["bench_lm", "bench_lm_char"])] == [
        "bench_lm_char", "bench_lm_files", "bench_lm_wikitext2"]
    ctx = book_.Ctx(work=tmp_path, quick=True)
    layout, bench = book_.BY_NAME["bench_lm_wikitext2"].commands(ctx)
    root = tmp_path / "corpora" / "wikitext-2-layout-0.2MB"
    assert layout.parse is None and layout.argv[1:] == ["scripts/wikitext_layout.py", "--out", str(root), "--mb", "0.2"]
    assert bench.argv[1:5] == ["-m", "lstm_train", "bench", "jobs/wikitext2_awd_lstm.yaml"]
    assert f"data.root={root}" in bench.argv and bench.parse is book_.bench_numbers
    jobs = {e.name: e.commands(ctx)[-1].argv[4] for e in book_.select(["bench_lm"])}
    assert jobs == {"bench_lm_char": "jobs/shakespeare_char.yaml", "bench_lm_files": "jobs/lm_files_example.yaml",
                    "bench_lm_wikitext2": "jobs/wikitext2_awd_lstm.yaml"}


def test_a_run_writes_one_record_and_benchmarks_md_without_quick_records(tmp_path: Path) -> None:
    proc = book("self_check", "--max-load", "100", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = records(tmp_path)
    record = json.loads(path.read_text())
    m = record["machine"]
    assert path.name.startswith(record["date"][:4]) and path.name.endswith(f"-{m['slug']}-{record['short_commit']}.json")
    assert m["cpu"] and m["cores"] == os.cpu_count() and m["auto_precision"] in ("no", "bf16", "fp16")
    assert set(m["flags"]) <= {"amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2"} and m["torch"]
    assert len(record["commit"]) == 40 and isinstance(record["dirty"], bool) and record["quick"] is False
    assert record["busy"] is False and record["busy_why"] is None and record["max_load"] == 100
    assert set(record["load"]) == {"self_check"}
    (entry,) = record["entries"]
    assert entry["ok"] and entry["error"] is None and entry["busy"] is False and entry["seconds"] > 0
    assert entry["commands"][0].startswith(".venv/bin/python -c ") or "-c 'import json, time" in entry["commands"][0]
    names = {n["name"]: n for n in entry["numbers"]}
    assert names["import torch + lstm_train s"]["value"] > 0
    assert all(entry["commands"][n["command"]] for n in entry["numbers"])  # each number names its command
    table = (tmp_path / "BENCHMARKS.md").read_text()
    assert f"`{m['slug']}`" in table and "| `self_check` | import torch + lstm_train s |" in table
    assert record["code_commit"][:8] in table and entry["commands"][0].replace("|", "\\|")[:40] in table

    quick = book("self_check", "--quick", "--max-load", "100", tmp=tmp_path)
    assert quick.returncode == 0, quick.stderr[-3000:]
    assert len(records(tmp_path)) == 2
    (quick_path,) = [p for p in records(tmp_path) if p != path]
    assert quick_path.name.endswith("-quick.json") and json.loads(quick_path.read_text())["quick"] is True
    assert (tmp_path / "BENCHMARKS.md").read_text() == table  # the quick record is not shown
    assert not list(tmp_path.glob(".book-*.tmp")) and not list((tmp_path / "benchmarks").glob(".*"))


def test_a_busy_machine_is_said_in_the_record(tmp_path: Path) -> None:
    proc = book("self_check", "--max-load", "0", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = records(tmp_path)
    record = json.loads(path.read_text())
    (entry,) = record["entries"]
    if os.getloadavg()[0] == 0.0 and not entry["busy"]:
        pytest.skip("this machine is perfectly idle: no load above 0 to report")
    assert record["busy"] is True and record["busy_why"] and entry["busy"] is True
    assert "> 0.0" in entry["busy_why"]
    assert entry["numbers"]  # still measured, marked busy
    assert "BUSY" in proc.stderr
    table = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| `self_check` **busy** |" in table and "Busy:" in table


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_book_leaves_no_record(tmp_path: Path, sig: signal.Signals) -> None:
    pid_file = tmp_path / "work" / "test_sleep.pid"
    proc = subprocess.Popen([sys.executable, str(BOOK), "self_check", "test_sleep", "--dir", str(tmp_path / "benchmarks"),
                             "--work", str(tmp_path / "work"), "--max-load", "100", "--settle", "0"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "LSTM_TRAIN_BOOK_TEST": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120  # a hang guard: the entry starts in about a second on a quiet machine
    while not (pid_file.exists() and pid_file.read_text().strip().isdigit()):  # the pid written, not only the file made
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=30)[1][-3000:]
        time.sleep(0.05)
    sleeper = int(pid_file.read_text())
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert f"interrupted by {sig.name}: no record written" in err
    assert records(tmp_path) == [] and not (tmp_path / "BENCHMARKS.md").exists()  # self_check had finished: still none
    assert not list(tmp_path.glob(".book-*.tmp"))
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):  # the running entry's command was ended with the book
        os.kill(sleeper, 0)


def test_benchmarks_md_keeps_each_entrys_latest_success_and_never_a_quick_record(tmp_path: Path) -> None:
    """Records written by hand (as the book writes them): per machine and entry, the latest full-size
    run that succeeded; a later failure does not hide it; an entry that never succeeded shows its failure."""
    book_ = load_book()
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    machine = {"cpu": "Test CPU", "flags": ["avx2"], "cores": 2, "memory_gib": 8.0, "torch": "2.x", "gpu": None,
               "auto_precision": "no", "slug": "test-cpu-avx2-2c"}

    def write(name: str, date: str, quick: bool, entries: list[dict]) -> None:
        (folder / name).write_text(json.dumps({"date": date, "commit": "c" * 40, "short_commit": name[:8],
                                               "dirty": False, "quick": quick, "machine": machine, "entries": entries}))

    def entry(name: str, ok: bool, value: float | None = None, cmd: str = "cmd") -> dict:
        return {"name": name, "ok": ok, "error": None if ok else "exit 1: boom", "busy": False, "commands": [cmd],
                "numbers": [] if value is None else [{"name": "x", "value": value, "command": 0}]}

    write("aaaaaaaa.json", "2026-01-01T00:00:00+00:00", False, [entry("generate", True, 1.5, "gen one"),
                                                                entry("shards", False)])
    write("bbbbbbbb.json", "2026-01-02T00:00:00+00:00", False, [entry("generate", False)])
    write("cccccccc.json", "2026-01-03T00:00:00+00:00", True, [entry("generate", True, 99.0, "gen quick")])
    (folder / "notes.json").write_text("[1, 2]")  # not a record: ignored
    out = book_.render(folder)
    assert out == tmp_path / "BENCHMARKS.md"
    text = out.read_text()
    assert "## Test CPU, 2 cores (`test-cpu-avx2-2c`)" in text
    # the registry's order (shards before generate); commands numbered as first cited
    assert "| `generate` | x | 1.5 | 2026-01-01 00:00 | aaaaaaaa | [2] |" in text and "2. `gen one`" in text
    assert "99" not in text and "gen quick" not in text and "bbbbbbbb" not in text
    assert "| `shards` | - | failed: exit 1: boom | 2026-01-01 00:00 | aaaaaaaa | [1] |" in text


def test_lstm_train_bench_book_runs_the_checkouts_book_or_says_it_needs_one(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "lstm_train", "bench", "--book", "nosuch"], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "book: unknown entry 'nosuch'; entries: bench_mnist" in proc.stderr
    # The package alone (as installed from a wheel): no scripts/book.py beside it.
    shutil.copytree(ROOT / "lstm_train", tmp_path / "lstm_train", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "lstm_train", "bench", "--book", "generate"], capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2
    assert "error: the benchmark book needs a checkout of the repository" in proc.stderr


def test_missing_runs_only_what_this_code_has_no_record_of_and_benchmarks_md_says_so(tmp_path: Path) -> None:
    """`--missing` (a book finished over several quiet windows): an entry with a successful record of this
    checkout's code on this machine is not run again; BENCHMARKS.md names the default entries not yet
    measured on this code, and a record of other code (another `code_tree`) does not count."""
    # A committed copy of this checkout's book and package (a working tree with edits would be "dirty":
    # its records measure uncommitted code, which --missing never counts).
    repo = tmp_path / "repo"
    for part in ("scripts", "lstm_train"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "code"], check=True)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(repo / "scripts" / "book.py"), "--dir", str(repo / "benchmarks"),
                               "--work", str(tmp_path / "work"), "--settle", "0", "--max-load", "100", *args],
                              capture_output=True, text=True, timeout=120, cwd=repo,
                              env={**os.environ, "PYTHONPATH": str(repo)})

    first = run("self_check", "--missing")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "missing for this code" in first.stderr and "self_check" in first.stderr
    (path,) = sorted((repo / "benchmarks").glob("*.json"))
    record = json.loads(path.read_text())
    assert len(record["code_tree"]) == 16 and len(record["code_commit"]) == 40 and record["dirty"] is False
    subprocess.run([*git, "add", "."], check=True)  # the records committed: the code is the same
    subprocess.run([*git, "commit", "-q", "-m", "records"], check=True)
    again = run("self_check", "--missing")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "every entry asked for has a record of this code" in again.stderr
    assert len(list((repo / "benchmarks").glob("*.json"))) == 1
    (repo / "lstm_train" / "changed.py").write_text("")  # new code, committed: the record no longer counts
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "more code"], check=True)
    assert json.loads(subprocess.run([sys.executable, "-c", "import json, book; print(json.dumps(book.commit()))"],
                                     capture_output=True, text=True, check=True, cwd=repo / "scripts",
                                     env={**os.environ, "PYTHONPATH": str(repo)}).stdout)["code_tree"] != record["code_tree"]

    book_ = load_book()
    code = book_.commit()  # this checkout's: what render() compares against
    defaults = [e for e in book_.ENTRIES if e.default]
    here = {"code_tree": code["code_tree"], "code_commit": code["code_commit"]}
    ok = {"name": "", "ok": True, "error": None, "busy": False, "commands": ["c"], "numbers": []}
    machine = {**record["machine"], "slug": "test-cpu-2c", "cpu": "Test CPU"}
    folder = tmp_path / "hand"
    folder.mkdir()

    def write(name: str, date: str, code_tree: str, names: list[str]) -> None:
        (folder / name).write_text(json.dumps({"date": date, "commit": "c" * 40, "short_commit": name[:8],
                                               "dirty": False, "quick": False, "machine": machine,
                                               "code_commit": "d" * 40, "code_tree": code_tree,
                                               "entries": [{**ok, "name": n,
                                                            "inputs": book_.input_digests(book_.BY_NAME[n])}
                                                           for n in names]}))

    write("a.json", "2026-01-01T00:00:00+00:00", here["code_tree"], [e.name for e in defaults[1:]])
    write("b.json", "2026-01-02T00:00:00+00:00", "0" * 16, [defaults[0].name])  # other code
    assert [e.name for e in book_.missing(defaults, folder, "test-cpu-2c", here)] == [defaults[0].name]
    text = book_.render(folder).read_text()
    assert f"{len(defaults) - 1} of {len(defaults)} default entries measured this code" in text
    assert f"not yet: `{defaults[0].name}`" in text and "--missing" in text
    write("c.json", "2026-01-03T00:00:00+00:00", here["code_tree"], [defaults[0].name])
    assert book_.missing(defaults, folder, "test-cpu-2c", here) == []
    assert "**Every default entry below measured this code**" in book_.render(folder).read_text()


def test_an_entry_counts_for_the_job_specs_it_ran_and_not_their_comments(tmp_path: Path) -> None:
    """The book's identity beyond the code: an entry's record stands while the job specs it runs parse the
    same (a comment quoting a number changes nothing), and only the entries that run a changed spec (or
    read its bytes, as bench_lm_files' corpus does) need measuring again."""
    book_ = load_book()
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "jobs", checkout / "jobs")
    shutil.copy(ROOT / "README.md", checkout / "README.md")
    real_root = book_.ROOT
    book_.ROOT = checkout  # input_digests reads this checkout's files
    try:
        code = {"code_tree": "e" * 16, "code_commit": "d" * 40}
        defaults = [e for e in book_.ENTRIES if e.default]
        folder = tmp_path / "records"
        folder.mkdir()
        machine = {"slug": "test-cpu-2c", "cpu": "Test CPU", "cores": 2}
        entries = [{"name": e.name, "ok": True, "error": None, "busy": False, "commands": ["c"], "numbers": [],
                    "inputs": book_.input_digests(e)} for e in defaults]
        (folder / "a.json").write_text(json.dumps({"date": "2026-01-01T00:00:00+00:00", "dirty": False, "quick": False,
                                                   "machine": machine, "entries": entries, **code}))
        assert book_.missing(defaults, folder, "test-cpu-2c", code) == []
        assert book_.input_digests(book_.BY_NAME["lm_char"])["jobs/shakespeare_char.yaml"].startswith("spec:")

        mnist = checkout / "jobs" / "mnist_lstm.yaml"
        mnist.write_text(mnist.read_text() + "# reached 0.97 (BENCHMARKS.md)\n")  # a comment: the spec is the same
        assert [e.name for e in book_.missing(defaults, folder, "test-cpu-2c", code)] == ["bench_lm_files"]

        lm = checkout / "jobs" / "shakespeare_char.yaml"
        assert "lr: 0.002" in lm.read_text()
        lm.write_text(lm.read_text().replace("lr: 0.002", "lr: 0.003"))  # a tuned value: its entries again
        stale = {e.name for e in book_.missing(defaults, folder, "test-cpu-2c", code)}
        assert stale == {e.name for e in defaults if "jobs/shakespeare_char.yaml" in e.inputs} | {"bench_lm_files"}
        assert {"lm_char", "lm_char_budget", "lm_precision", "lm_char_procs"} <= stale
        assert not stale & {"lm_char_best", "bench_mnist", "prepare", "reach_mnist_lstm_best"}
    finally:
        book_.ROOT = real_root


def test_every_job_spec_an_entry_runs_is_one_of_its_inputs(tmp_path: Path) -> None:
    """An entry's `inputs` must name every job spec it runs (in its commands, or in the scripts they
    call): an undeclared one could change without its record going stale."""
    book_ = load_book()
    ctx = book_.Ctx(work=tmp_path / "work", quick=False)
    pattern = re.compile(r"jobs/[\w.-]+\.yaml")
    literal = re.compile(r"[\"'](jobs/[\w.-]+\.yaml)[\"']")
    for entry in book_.ENTRIES:
        named: set[str] = set()
        for command in entry.commands(ctx):
            for arg in command.argv:
                named |= set(pattern.findall(arg))
                if arg.startswith("scripts/") and arg.endswith(".py"):  # a job path as a string literal in it
                    named |= set(literal.findall((ROOT / arg).read_text()))
        if "bench" in [a for c in entry.commands(ctx) for a in c.argv] and not any(
                a.startswith("jobs/") for c in entry.commands(ctx) for a in c.argv):
            named.add("jobs/mnist_lstm.yaml")  # `lstm-train bench` without a job benches the tutorial's
        declared = {p for p in entry.inputs if not any(c in p for c in "*?[")}
        assert named <= declared, (entry.name, named - declared)
