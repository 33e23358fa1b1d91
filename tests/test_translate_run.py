"""The translate task through the real CLI and loop, on small generated parallel files: train,
select on val BLEU, test once (sacreBLEU keys, TSV), predict (--text, --file, --beam), the run's
vocabulary checked, resume mid-epoch bit-exact, 2-process DDP, bad files -> exit 2."""

from __future__ import annotations

import random
from pathlib import Path


from .conftest import ROOT, accelerate_cli, result_of, resume_inside_an_epoch, run_cli

JOB = str(ROOT / "jobs" / "translate_files_example.yaml")
WORDS = "ka lu mi no pe ra si tu vo we".split()
SMALL = ["model.embed_size=32", "model.hidden_size=32", "model.num_layers=1", "model.decoder_hidden=64",
         "model.dropout=0.1", "model.label_smoothing=0.0", "model.beam_size=2", "data.subword.vocab_size=40",
         "data.max_tokens=null", "data.batch_size=64", "optim.lr=0.01", "train.log_every=10",
         "train.mixed_precision=no", "tracking.wandb.mode=disabled"]


def reverse(sentence: str) -> str:
    return " ".join(reversed(sentence.split())).capitalize() + "."


def write_split(folder: Path, name: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    source = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for _ in range(n)]
    (folder / f"{name}.src").write_text("\n".join(source) + "\n", encoding="utf-8")
    (folder / f"{name}.tgt").write_text("\n".join(reverse(s) for s in source) + "\n", encoding="utf-8")
    return source


def files(folder: Path, n_train: int = 1500) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", n_train, 0), ("val", 60, 1), ("test", 80, 2)):
        write_split(folder, name, n, seed)
    return [f"data.{split}.{side}={folder / f'{split}.{ext}'}" for split in ("train", "val", "test")
            for side, ext in (("source", "src"), ("target", "tgt"))]


def test_run_then_predict_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli("run", JOB, *files(tmp_path / "data"), f"train.output_dir={out}", "train.epochs=10", *SMALL)
    assert proc.returncode == 0, proc.stderr
    result = result_of(out)
    assert result["primary_metric"] == "test_bleu" and result["best_step"] is not None
    assert result["test_bleu"] > 80 and result["test_bleu_lc"] >= result["test_bleu"] and result["test_chrf"] > 80
    assert result["val_bleu"] > 80 and result["test_sentences"] == 80 and result["test_exact_match"] > 0.8
    assert result["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert result["decoding"] == "beam 2, length_penalty 1.0" and result["test_decode_sentences_per_second"] > 0
    assert result["tokens_per_second"] > 0 and 0 <= result["padding_fraction"] < 1
    rows = (out / "test_translations.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "source\treference\thypothesis" and len(rows) == 81
    source, reference, hypothesis = rows[1].split("\t")
    assert reference == reverse(source)
    assert (out / "vocab.model").is_file()

    text = run_cli("predict", str(out), "--text", "ka lu mi", "--text", "we vo tu si")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == ["Mi lu ka.", "Si tu vo we."]
    lines = tmp_path / "lines.txt"
    lines.write_text("pe ra\nno no mi\n", encoding="utf-8")
    listed = run_cli("predict", str(out), "--file", str(lines), "--beam", "4")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["Ra pe.", "Mi no no."]
    nothing = run_cli("predict", str(out))
    assert nothing.returncode == 2 and "--text" in nothing.stderr
    # An empty or blank input is refused (named, exit 2), as by every task; no traceback.
    for args in (["--text", ""], ["--text", "ka", "--text", "  "]):
        empty = run_cli("predict", str(out), *args)
        assert empty.returncode == 2 and "--text number" in empty.stderr and "Traceback" not in empty.stderr
    lines.write_text("pe ra\n\nno no mi\n", encoding="utf-8")
    blank_line = run_cli("predict", str(out), "--file", str(lines))
    assert blank_line.returncode == 2 and "lines.txt:2: empty line" in blank_line.stderr

    # The run directory's vocabulary must be the checkpoint's.
    (out / "vocab.model").write_bytes((out / "vocab.model").read_bytes()[:-40] + b"\0" * 40)
    bad = run_cli("predict", str(out), "--text", "ka lu")
    assert bad.returncode == 2 and "vocab.model" in bad.stderr, bad.stderr


def test_resume_mid_epoch_gives_the_same_weights(tmp_path: Path) -> None:
    """Cut back to a checkpoint inside an epoch and resumed: bit-identical weights and scores
    (dropout masks continue from the saved random state)."""
    args = [JOB, *files(tmp_path / "data", n_train=300), "train.epochs=3", "train.checkpoint_every=2",
            "train.keep_checkpoints=50", *SMALL, "model.beam_size=1"]
    steps_per_epoch = 5  # 300 pairs, batches of 64
    a, b, mid = resume_inside_an_epoch(args, tmp_path, steps_per_epoch)
    assert b["resumed_from_step"] == mid and b["parts"] == 2
    assert a["weights_sha1_per_rank"] == b["weights_sha1_per_rank"]
    assert a["test_bleu"] == b["test_bleu"] and a["test_loss"] == b["test_loss"]


def test_two_process_ddp_trains_one_model(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = accelerate_cli(2, "run", JOB, *files(tmp_path / "data", n_train=256), f"train.output_dir={out}",
                          "train.epochs=2", *SMALL, "data.global_batch_size=64")
    assert proc.returncode == 0, proc.stderr
    result = result_of(out)
    assert result["world_size"] == 2 and len(set(result["weights_sha1_per_rank"])) == 1
    assert result["test_sentences"] == 80 and result["global_batch_size"] == 64  # every test pair once


def test_bad_parallel_files_exit_2_naming_file_and_line(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "run"
    args = files(data, n_train=50)
    train_tgt = data / "train.tgt"
    lines = train_tgt.read_text(encoding="utf-8").splitlines()
    train_tgt.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    proc = run_cli("run", JOB, *args, f"train.output_dir={out}", *SMALL)
    assert proc.returncode == 2
    assert f"error: {data / 'train.src'} has 50 lines but {train_tgt} has 49" in proc.stderr
    assert "line 50 is the first that only one file has" in proc.stderr
    assert not out.exists()  # bad data leaves no debris

    lines[6] = ""
    train_tgt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = run_cli("run", JOB, *args, f"train.output_dir={out}", *SMALL)
    assert proc.returncode == 2 and f"{train_tgt}, line 7: empty line" in proc.stderr

    tsv = data / "pairs.tsv"
    tsv.write_text("ka lu\tLu ka.\nmi no\n", encoding="utf-8")
    proc = run_cli("run", JOB, *args, f"data.train={{tsv: {tsv}}}", f"train.output_dir={out}", *SMALL)
    assert proc.returncode == 2 and f"{tsv}, line 2: 1 column" in proc.stderr

    proc = run_cli("run", JOB, *files(data, n_train=50), "data.max_length=3", "data.too_long=error",
                   f"train.output_dir={out}", *SMALL)
    assert proc.returncode == 2 and "over data.max_length=3" in proc.stderr
