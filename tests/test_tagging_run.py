"""The tag task through the real CLI and loop, on small generated CoNLL-U and column files:
train + select on dev + test, predict round trip (--text, --file, --conllu), BIO entities
with a CRF, resume mid-epoch bit-exact, 2-process DDP, bad input -> exit 2."""

from __future__ import annotations

import random
from pathlib import Path


from .conftest import ROOT, accelerate_cli, result_of, resume_inside_an_epoch, run_cli

UPOS_JOB = str(ROOT / "jobs" / "ud_ewt_upos.yaml")
NER_JOB = str(ROOT / "jobs" / "tag_conll_example.yaml")
LEXICON = {
    "DET": ["the", "a", "this", "every"],
    "ADJ": ["big", "small", "red", "quick", "happy", "old"],
    "NOUN": ["cat", "dog", "station", "nation", "table", "garden", "motion", "river"],
    "VERB": ["walked", "jumped", "opened", "painted", "played", "watched"],
    "ADP": ["on", "in", "under", "near"],
}
# Unseen in training: the char features must carry them (suffixes -ion / -ed).
UNSEEN = {"NOUN": ["lotion", "fashion"], "VERB": ["kicked", "pulled"]}
SMALL = ["model.hidden_size=16", "model.word_dim=16", "model.char_dim=8", "model.char_size=16", "model.num_layers=1",
         "data.batch_size=8", "data.global_batch_size=8", "optim.lr=0.01", "train.log_every=5",
         "train.mixed_precision=no"]


def sentence(rng: random.Random, lexicon: dict[str, list[str]]) -> list[tuple[str, str]]:
    pattern = ["DET", "ADJ", "NOUN", "VERB", "ADP", "DET", "NOUN"][: rng.randint(4, 7)]
    words = [(rng.choice(lexicon[tag]), tag) for tag in pattern if tag in lexicon] + [(".", "PUNCT")]
    return [(w.capitalize() if i == 0 else w, t) for i, (w, t) in enumerate(words)]


def write_conllu(path: Path, sentences: list[list[tuple[str, str]]]) -> None:
    lines = []
    for n, words in enumerate(sentences):
        lines += [f"# sent_id = s{n}", f"# text = {' '.join(w for w, _ in words)}"]
        lines += [f"{i}\t{w}\t{w.lower()}\t{t}\t_\t_\t{0 if i == 1 else 1}\t{'root' if i == 1 else 'dep'}\t_\t_"
                  for i, (w, t) in enumerate(words, 1)]
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_ud(root: Path, n_train: int = 160) -> Path:
    rng = random.Random(0)
    folder = root / "UD_English-EWT"
    folder.mkdir(parents=True)
    write_conllu(folder / "en_ewt-ud-train.conllu", [sentence(rng, LEXICON) for _ in range(n_train)])
    mixed = {t: words + UNSEEN.get(t, []) for t, words in LEXICON.items()}
    for split in ("dev", "test"):
        write_conllu(folder / f"en_ewt-ud-{split}.conllu", [sentence(rng, mixed) for _ in range(40)])
    return root


def test_upos_run_then_predict_round_trip(tmp_path):
    data, out = make_ud(tmp_path / "data"), tmp_path / "run"
    proc = run_cli("run", UPOS_JOB, f"data.root={data}", f"train.output_dir={out}", "train.epochs=8", *SMALL)
    assert proc.returncode == 0, proc.stderr
    result = result_of(out)
    assert result["primary_metric"] == "test_accuracy" and result["best_step"] is not None
    assert result["test_accuracy"] > 0.9 and result["val_accuracy"] > 0.9
    assert result["test_unseen_word_tokens"] > 0 and 0 <= result["test_accuracy_unseen"] <= 1
    assert result["test_accuracy_seen"] > 0.95
    assert result["test_tokens"] == sum(line.count("\t") == 9 for line in
                                        (data / "UD_English-EWT/en_ewt-ud-test.conllu").read_text().splitlines())
    assert result["test_unseen_tag_tokens"] == 0 and result["tokens_per_second"] > 0
    assert set(result["test_per_tag"]) == {"DET", "ADJ", "NOUN", "VERB", "ADP", "PUNCT"}
    assert (out / "confusion.png").stat().st_size > 0 or not result["test_most_confused"]
    assert "tag: val 40 sentences" in proc.stderr
    for name in ("vocab_words.json", "vocab_chars.json", "tags.json", "test_per_tag.tsv", "test_predictions.tsv"):
        assert (out / name).is_file(), name

    text = run_cli("predict", str(out), "--text", "The big cat walked on the table .")
    assert text.returncode == 0, text.stderr
    assert text.stdout.strip() == "The/DET big/ADJ cat/NOUN walked/VERB on/ADP the/DET table/NOUN ./PUNCT"

    lines = tmp_path / "lines.txt"
    lines.write_text("A dog jumped .\nthe old river\n")
    listed = run_cli("predict", str(out), "--file", str(lines))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split("\n")[:2] == ["A/DET dog/NOUN jumped/VERB ./PUNCT", "the/DET old/ADJ river/NOUN"]
    positional = run_cli("predict", str(out), "A dog jumped .")  # the same inputs as every text task
    assert positional.stdout.split("\n")[0] == "A/DET dog/NOUN jumped/VERB ./PUNCT", positional.stderr
    # Blank inputs are refused the same way by every task: named, exit 2, nothing on stdout.
    lines.write_text("A dog jumped .\n\nthe old river\n")
    for args in (["--file", str(lines)], ["--text", " "]):
        blank_input = run_cli("predict", str(out), *args)
        assert blank_input.returncode == 2 and blank_input.stdout == "", blank_input.stderr
    assert "lines.txt:2: empty line" in run_cli("predict", str(out), "--file", str(lines)).stderr

    # --conllu: the UPOS column of a file with it blanked is filled back; the rest is untouched.
    test_file = data / "UD_English-EWT/en_ewt-ud-test.conllu"
    original = test_file.read_text()
    blank = tmp_path / "blank.conllu"
    blank.write_text("\n".join("\t".join(c[:3] + ["_"] + c[4:]) if len(c := line.split("\t")) == 10 else line
                               for line in original.split("\n")))
    filled = tmp_path / "filled.conllu"
    proc = run_cli("predict", str(out), "--conllu", str(blank), "--output", str(filled))
    assert proc.returncode == 0, proc.stderr
    got, want = filled.read_text().split("\n"), original.split("\n")
    assert len(got) == len(want)
    words = [(g.split("\t"), w.split("\t")) for g, w in zip(got, want) if w.count("\t") == 9]
    assert all(g[:3] + g[4:] == w[:3] + w[4:] for g, w in words)
    assert sum(g[3] == w[3] for g, w in words) / len(words) > 0.9
    stdout = run_cli("predict", str(out), "--conllu", str(blank))
    assert stdout.returncode == 0 and stdout.stdout == filled.read_text()

    # The run directory's vocabulary must be the checkpoint's.
    (out / "vocab_words.json").write_text((out / "vocab_chars.json").read_text())
    bad = run_cli("predict", str(out), "--text", "a cat")
    assert bad.returncode == 2 and "vocab_words.json" in bad.stderr and "not the one" in bad.stderr


NER_TRAIN = [
    [("Peter", "B-PER"), ("Blackburn", "I-PER"), ("visited", "O"), ("Paris", "B-LOC"), (".", "O")],
    [("The", "O"), ("EU", "B-ORG"), ("rejects", "O"), ("German", "B-MISC"), ("beef", "O"), (".", "O")],
    [("Anna", "B-PER"), ("left", "O"), ("Berlin", "B-LOC"), ("for", "O"), ("the", "O"), ("UN", "B-ORG"), (".", "O")],
]


def write_columns(path: Path, sentences: list[list[tuple[str, str]]], docstart: bool = True) -> None:
    lines = ["-DOCSTART- -X- -X- O", ""] if docstart else []
    for words in sentences:
        lines += [f"{w} POS CHUNK {t}" for w, t in words] + [""]
    path.write_text("\n".join(lines) + "\n")


def test_bio_columns_with_crf_report_entities(tmp_path):
    data = tmp_path / "ner"
    data.mkdir()
    write_columns(data / "train.txt", NER_TRAIN * 20)
    write_columns(data / "dev.txt", NER_TRAIN)
    # An I- after O (read as an entity start, as conlleval does) and a tag training never had.
    write_columns(data / "test.txt", NER_TRAIN + [[("Mr", "O"), ("Smith", "I-PER"), ("met", "O"), ("Bob", "B-NEW")]])
    out = tmp_path / "run"
    proc = run_cli("run", NER_JOB, f"data.root={data}", f"train.output_dir={out}", "train.epochs=15", *SMALL)
    assert proc.returncode == 0, proc.stderr
    result = result_of(out)
    assert result["primary_metric"] == "test_entity_f1"
    assert result["test_unseen_tag_tokens"] == 1 and "B-NEW (1)" in proc.stderr
    assert "test: 1 I- tags do not continue an entity" in proc.stderr
    assert 0.5 < result["test_entity_recall"] < 1 and result["val_entity_f1"] > 0.9
    assert (out / "test_entities.txt").read_text().count("PER") >= 1
    predicted = run_cli("predict", str(out), "--text", "Peter Blackburn visited Paris .")
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.strip() == "Peter/B-PER Blackburn/I-PER visited/O Paris/B-LOC ./O"
    refused = run_cli("predict", str(out), "--conllu", str(data / "train.txt"))
    assert refused.returncode == 2 and "trained on whitespace-column files" in refused.stderr


def test_resume_mid_epoch_gives_the_same_weights(tmp_path):
    """A run cut back to a checkpoint inside an epoch, resumed: bit-identical weights and metrics
    (word dropout and dropout masks continue from the saved random state)."""
    data = make_ud(tmp_path / "data", n_train=60)
    steps_per_epoch = 8  # 60 sentences, batches of 8
    args = [UPOS_JOB, f"data.root={data}", "data.val=null", "train.epochs=3", "train.checkpoint_every=3",
            "train.keep_checkpoints=50", *SMALL, "model.num_layers=2", "model.crf=true"]
    a, b, mid = resume_inside_an_epoch(args, tmp_path, steps_per_epoch)
    assert b["resumed_from_step"] == mid and b["parts"] == 2
    assert a["weights_sha1_per_rank"] == b["weights_sha1_per_rank"]
    assert a["test_accuracy"] == b["test_accuracy"] and a["test_loss"] == b["test_loss"]


def test_two_process_ddp_trains_one_tagger(tmp_path):
    data, out = make_ud(tmp_path / "data", n_train=64), tmp_path / "run"
    proc = accelerate_cli(2, "run", UPOS_JOB, f"data.root={data}", f"train.output_dir={out}", "train.epochs=2", *SMALL)
    assert proc.returncode == 0, proc.stderr
    result = result_of(out)
    assert result["world_size"] == 2 and len(set(result["weights_sha1_per_rank"])) == 1
    assert result["test_tokens"] > 0 and result["global_batch_size"] == 8


def test_bad_files_exit_2_naming_file_and_line(tmp_path):
    data = make_ud(tmp_path / "data", n_train=10)
    train = data / "UD_English-EWT/en_ewt-ud-train.conllu"
    lines = train.read_text().split("\n")
    lines[4] = "\t".join(lines[4].split("\t")[:8])  # a word line with 8 columns
    train.write_text("\n".join(lines))
    out = tmp_path / "run"
    proc = run_cli("run", UPOS_JOB, f"data.root={data}", f"train.output_dir={out}", *SMALL)
    assert proc.returncode == 2
    assert f"error: {train}:5: 8 tab-separated columns, CoNLL-U needs 10" in proc.stderr
    assert not out.exists()  # bad data leaves no debris
    proc = run_cli("run", UPOS_JOB, f"data.root={data}", "data.column=upostag", f"train.output_dir={out}", *SMALL)
    assert proc.returncode == 2 and "no CoNLL-U tag column 'upostag'" in proc.stderr
    (data / "UD_English-EWT/en_ewt-ud-test.conllu").write_text("")
    proc = run_cli("run", UPOS_JOB, f"data.root={data}", "data.train=UD_English-EWT/en_ewt-ud-dev.conllu",
                   f"train.output_dir={out}", *SMALL)
    assert proc.returncode == 2 and "en_ewt-ud-test.conllu: the file is empty" in proc.stderr
