"""Translation: parallel files and their errors, subword vocabularies, the attention encoder-decoder,
decoding, sacreBLEU statistics, and a model that learns to reverse sentences."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sacrebleu.metrics import BLEU, CHRF

from lstm_train.config import ConfigError, validate_job
from lstm_train.data.store import prepared
from lstm_train.data.parallel import ParallelDataError, read_line_aligned, read_tsv
from lstm_train.data.streams.parallel_read import Blanks
from lstm_train.data.ragged import Padded
from lstm_train.data.subword import BOS, EOS, PAD, SubwordVocab, VocabError
from lstm_train.models.decoding import beam_search, greedy_search
from lstm_train.models.losses import smoothed_cross_entropy
from lstm_train.models.translator import Translator
from lstm_train.tasks.base import RunFileMismatch
from lstm_train.tasks.translate import Scorer, TranslateTask, column_texts, text_column

WORDS = "ka lu mi no pe ra si tu vo we".split()


pytestmark = pytest.mark.usefixtures("one_thread")


def sentences(n: int, seed: int, shortest: int = 2, longest: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(shortest, longest))) for _ in range(n)]


def reverse(sentence: str) -> str:
    """The target language of the tests: the words in reverse order, capitalised, with a full stop."""
    return " ".join(reversed(sentence.split())).capitalize() + "."


def write_pairs(folder: Path, name: str, source: list[str], target: list[str]) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    src, tgt = folder / f"{name}.src", folder / f"{name}.tgt"
    src.write_text("\n".join(source) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(target) + "\n", encoding="utf-8")
    return src, tgt


def reversal_files(folder: Path, n_train: int = 2000) -> dict[str, dict[str, str]]:
    files = {}
    for split, n, seed in (("train", n_train, 0), ("val", 100, 1), ("test", 100, 2)):
        source = sentences(n, seed)
        src, tgt = write_pairs(folder, split, source, [reverse(s) for s in source])
        files[split] = {"source": str(src), "target": str(tgt)}
    return files


def job(data: dict, model: dict | None = None, **train) -> object:
    spec = {
        "name": "translate_test", "task": "translate",
        "data": {"dataset": "files", "subword": {"vocab_size": 40}, "batch_size": 64, **data},
        "model": {"embed_size": 32, "hidden_size": 32, "num_layers": 1, "decoder_hidden": 64, "dropout": 0.0,
                  "label_smoothing": 0.0, **(model or {})},
        "train": {"mixed_precision": "no", **train},
    }
    return validate_job(spec, "test job")


# ---------------------------------------------------------------------------
# Parallel files and their errors


def test_line_aligned_files_must_have_equal_line_counts(tmp_path: Path) -> None:
    src, tgt = write_pairs(tmp_path, "a", ["eins", "zwei", "", "vier"], ["one", "two", "three", "four", "five"])
    with pytest.raises(ParallelDataError) as e:
        read_line_aligned(src, tgt)
    message = str(e.value)
    assert "has 4 lines" in message and "has 5" in message and str(src) in message and str(tgt) in message
    assert "line 3" in message  # the first line where one side is empty and the other is not
    src.write_text("eins\nzwei\n")
    with pytest.raises(ParallelDataError, match="line 3 is the first that only one file has"):
        read_line_aligned(src, tgt)


def test_a_line_empty_on_one_side_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    src, tgt = write_pairs(tmp_path, "a", ["eins", "zwei", "drei"], ["one", "  ", "three"])
    with pytest.raises(ParallelDataError, match=rf"{tgt.name}, line 2: empty line"):
        read_line_aligned(src, tgt)
    # empty on both sides: skipped and counted, the pairs after it stay aligned
    src, tgt = write_pairs(tmp_path, "b", ["eins", "", "drei"], ["one", "", "three"])
    pairs = read_line_aligned(src, tgt)
    assert pairs.source == ["eins", "drei"] and pairs.target == ["one", "three"] and pairs.skipped_blank == 1
    assert pairs.lines == [1, 3]


def test_tsv_rows_need_both_columns(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("Go.\tVa !\nRun!\tCours !\nHello.\n", encoding="utf-8")
    with pytest.raises(ParallelDataError, match=r"pairs.tsv, line 3: 1 column"):
        read_tsv(path)
    path.write_text("en\tfr\textra\nGo.\tVa !\tCC-BY\n\nRun!\tCours !\tCC-BY\n", encoding="utf-8")
    pairs = read_tsv(path, "fr", "en", header=True)
    assert pairs.source == ["Va !", "Cours !"] and pairs.target == ["Go.", "Run!"] and pairs.lines == [2, 4]
    with pytest.raises(ParallelDataError, match="no source column 'de'"):
        read_tsv(path, "de", "en", header=True)
    path.write_bytes("Go.\tVa !\nCaf\xe9\tCaf\xe9\n".encode("latin-1"))
    with pytest.raises(ParallelDataError, match=r"\.\w+:2: not UTF-8"):
        read_tsv(path)


def test_tatoeba_split_never_puts_one_english_sentence_in_two_splits(tmp_path: Path) -> None:
    """Split off by a seeded hash of the English sentence: its alternative translations stay
    together, whichever side is the source, and every pair lands in one split."""
    folder = tmp_path / "Tatoeba" / "fra-eng"
    folder.mkdir(parents=True)
    rows = [f"{s}.\t{s.upper()} {k} !" for s in sentences(400, 3) for k in range(1 + len(s) % 3)]
    (folder / "fra.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for source, target in (("en", "fr"), ("fr", "en")):
        j = validate_job({"name": "t", "task": "translate", "data": {
            "dataset": "tatoeba", "root": str(tmp_path), "source_lang": source, "target_lang": target,
            "val_fraction": 0.1, "test_fraction": 0.1}}, "test")
        stream = TranslateTask(j).stream_data()
        english: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
        for piece in stream.pieces():
            for split, _, s, t in stream.split_pairs(piece, Blanks()):
                english[split].add(s if source == "en" else t)
                assert s.endswith(".") == (source == "en") and t.endswith("!") == (source == "en")
        assert not (english["train"] & english["test"]) and not (english["train"] & english["val"])
        assert not (english["val"] & english["test"])
        assert sum(map(len, english.values())) == len({r.split("\t")[0] for r in rows})
        assert 0.05 < len(english["val"]) / len({r.split("\t")[0] for r in rows}) < 0.15
        splits = prepared.load(TranslateTask(j))
        assert len(splits.train[0]) + len(splits.val[0]) + len(splits.test[0]) == len(rows)


def test_files_job_needs_train_files_and_one_form_per_split() -> None:
    with pytest.raises(ConfigError, match="needs data.train"):
        validate_job({"name": "t", "task": "translate", "data": {"dataset": "files"}}, "job.yaml")
    with pytest.raises(ConfigError, match="not both"):
        validate_job({"name": "t", "task": "translate", "data": {
            "dataset": "files", "train": {"source": "a", "target": "b", "tsv": "c"}}}, "job.yaml")


def test_too_long_sentences_are_truncated_or_skipped_and_counted_or_refused(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    files = reversal_files(tmp_path, n_train=300)
    long_source = " ".join(["ka lu mi no pe"] * 8)
    src, tgt = write_pairs(tmp_path, "long", sentences(50, 9) + [long_source], [reverse(s) for s in sentences(50, 9)]
                           + [reverse(long_source)])
    files["train"] = {"source": str(src), "target": str(tgt)}

    truncated = prepared.load(TranslateTask(job({**files, "max_length": 20, "too_long": "truncate"})))
    assert truncated.info["data"]["train"]["truncated"] == 1 and truncated.info["data"]["train"]["pairs"] == 51
    assert int(truncated.train[0].lengths_cpu.max()) <= 20 and int(truncated.train[1].lengths_cpu.max()) <= 20
    assert truncated.train[1][50][-1] == EOS  # a truncated target still ends
    assert "1 train pair truncated" in capsys.readouterr().err

    skipped = prepared.load(TranslateTask(job({**files, "max_length": 20, "too_long": "skip"})))
    assert skipped.info["data"]["train"]["skipped"] == 1 and len(skipped.train[0]) == 50
    assert len(skipped.test[0]) == 100  # test sentences are never skipped

    with pytest.raises(ParallelDataError, match=r"long.src \+ .*long.tgt, line 51: the source sentence is \d+ subword"):
        prepared.load(TranslateTask(job({**files, "max_length": 20, "too_long": "error"})))


# ---------------------------------------------------------------------------
# Subword vocabularies


def test_subword_round_trip_is_detokenised_plain_text() -> None:
    corpus = sentences(300, 4) + ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee!", "« Ça va ? »"] * 5
    vocab = SubwordVocab.train(corpus, vocab_size=60)
    assert vocab == SubwordVocab.train(corpus, vocab_size=60)  # deterministic: every rank trains the same one
    texts = ["Ein Mann fährt Fahrrad.", "ka lu mi", "« Ça va ? »", "Zwei  Hunde\tspielen"]
    ids = vocab.encode_batch(texts)
    assert all(i not in (PAD, BOS, EOS) for row in ids for i in row)
    decoded = vocab.decode_batch([[BOS, *row, EOS, PAD, PAD] for row in ids])
    assert decoded[:3] == texts[:3]
    assert decoded[3] == "Zwei Hunde spielen"  # whitespace normalised, as SentencePiece does
    again = SubwordVocab.from_base64(vocab.to_base64())
    assert again == vocab and again.digest == vocab.digest
    column = text_column(texts)
    assert column_texts(column.pad(torch.arange(len(texts)))) == texts


def test_lowercase_vocabulary_and_broken_files(tmp_path: Path) -> None:
    vocab = SubwordVocab.train(sentences(100, 5), vocab_size=30)
    path = tmp_path / "vocab.model"
    vocab.save(path)
    assert SubwordVocab.load(path) == vocab
    path.write_bytes(b"not a model")
    with pytest.raises(VocabError, match="vocab.model: not a SentencePiece model"):
        SubwordVocab.load(path)


def test_a_vocabulary_file_that_does_not_match_the_checkpoint_is_refused(tmp_path: Path) -> None:
    files = reversal_files(tmp_path / "data", n_train=200)
    task = TranslateTask(job(files))
    splits = prepared.load(task)
    run = tmp_path / "run"
    run.mkdir()
    task.write_run_files(run, splits.info)
    assert (run / "vocab.model").read_bytes() == SubwordVocab.from_base64(splits.info["source_vocab"]).proto
    task.write_run_files(run, splits.info)  # a resumed run: the same vocabulary, accepted

    SubwordVocab.train(sentences(200, 7) + ["something else entirely"], vocab_size=40).save(run / "vocab.model")
    with pytest.raises(RunFileMismatch, match=r"vocab.model: this file \(digest \w+\) is not the one"):
        task.write_run_files(run, splits.info)
    again = TranslateTask(job(files), run_dir=run)
    with pytest.raises(RunFileMismatch, match="not the one the checkpoint was trained with"):
        again.predict(again.build_model(splits.info), splits.info, ["a sentence"], {})


# ---------------------------------------------------------------------------
# Model: padding, attention masking, decoding


def tiny_model(**kw) -> Translator:
    torch.manual_seed(0)
    options = dict(source_vocab=30, target_vocab=30, embed_size=16, hidden_size=12, num_layers=2,
                   decoder_hidden=20, dropout=0.0)
    return Translator(**{**options, **kw}).eval()


def random_batch(lengths: list[int], vocab: int = 30, seed: int = 0, fill: int = PAD) -> Padded:
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(4, vocab, (len(lengths), max(lengths)), generator=g)
    steps = torch.arange(max(lengths))[None, :]
    data = torch.where(steps < torch.tensor(lengths)[:, None], data, torch.full_like(data, fill))
    return Padded(data, torch.tensor(lengths))


@pytest.mark.parametrize("variant", [dict(attention="luong", input_feeding=True),
                                     dict(attention="luong", input_feeding=False),
                                     dict(attention="bahdanau", input_feeding=False, decoder_layers=2,
                                          tie_embeddings=False)])
def test_padding_never_changes_encoder_attention_or_logits(variant: dict) -> None:
    model = tiny_model(**variant)
    source = random_batch([5, 2, 7, 3], seed=1)
    target = random_batch([4, 6, 2, 5], seed=2)
    with torch.no_grad():
        memory, _ = model.encode(source.data, source.lengths)
        logits = model(source.data, source.lengths, target.data)
        # Garbage (not PAD) in the padded source positions: masks, not the pad id, must hide it.
        noisy = random_batch([5, 2, 7, 3], seed=1, fill=9)
        torch.testing.assert_close(model(noisy.data, noisy.lengths, target.data), logits, atol=1e-5, rtol=0)
        for b, (n, m) in enumerate(zip(source.lengths.tolist(), target.lengths.tolist())):
            alone_memory, _ = model.encode(source.data[b : b + 1, :n], source.lengths[b : b + 1])
            torch.testing.assert_close(memory.outputs[b, :n], alone_memory.outputs[0], atol=1e-5, rtol=0)
            alone = model(source.data[b : b + 1, :n], source.lengths[b : b + 1], target.data[b : b + 1, :m])
            torch.testing.assert_close(logits[b, :m], alone[0], atol=1e-5, rtol=0)
        context = model.attend(torch.randn(4, 3, 20), memory)
        # zero weight on padding: contexts are convex combinations of real positions only
        weights_check = model.attend(torch.randn(4, 20), memory._replace(outputs=memory.mask[..., None].float()))
        torch.testing.assert_close(weights_check, torch.ones(4, 1))
        assert context.shape == (4, 3, memory.outputs.shape[-1])


@pytest.mark.parametrize("variant", [dict(attention="luong", input_feeding=True),
                                     dict(attention="luong", input_feeding=False, decoder_layers=2),
                                     dict(attention="bahdanau", input_feeding=True)])
def test_decoding_steps_compute_what_teacher_forcing_computes(variant: dict) -> None:
    """Fed the gold tokens, the step function used by greedy and beam search gives the training
    logits (teacher forcing may run the LSTM over all steps at once; decoding cannot)."""
    model = tiny_model(**variant)
    source, target = random_batch([5, 2, 7], seed=5), random_batch([4, 6, 3], seed=6)
    with torch.no_grad():
        expected = model(source.data, source.lengths, target.data)
        memory, (h, c) = model.encode(source.data, source.lengths)
        state = (h, c, h.new_zeros(3, 20) if model.input_feeding else None)
        step = model._decoder("cpu")
        for t in range(target.data.shape[1]):
            logits, state = step(target.data[:, t], state, memory)
            torch.testing.assert_close(logits, expected[:, t], atol=1e-5, rtol=0)


def perturbed(model: Translator) -> Translator:
    with torch.no_grad():  # random weights decode near-constant sequences; make them diverse
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model


@pytest.mark.parametrize("variant", [dict(input_feeding=True), dict(attention="bahdanau")])
def test_beam_of_one_is_greedy_and_batches_decode_like_single_sentences(variant: dict) -> None:
    model = perturbed(tiny_model(**variant))
    source = random_batch([5, 2, 7, 3, 6, 1], seed=3)
    max_len = source.lengths * 2 + 3
    greedy = model.generate(source.data, source.lengths, beam_size=1, max_len=max_len)
    memory, (h, c) = model.encode(source.data, source.lengths)
    feed = h.new_zeros(6, 20) if model.input_feeding else None
    for penalty in (0.0, 1.0):
        beam1 = beam_search(model._decoder("cpu"), (h, c.float(), feed), memory, 6, 1, bos=BOS, eos=EOS, pad=PAD,
                            max_len=max_len, forbidden=(PAD, BOS, 1), length_penalty=penalty,
                            reorder=model._reorder)
        assert torch.equal(beam1, greedy)
    beam4 = model.generate(source.data, source.lengths, beam_size=4, max_len=max_len)
    for b, n in enumerate(source.lengths.tolist()):
        for beam, batched in ((1, greedy), (4, beam4)):
            alone = model.generate(source.data[b : b + 1, :n], source.lengths[b : b + 1], beam_size=beam,
                                   max_len=max_len[b : b + 1])
            row = batched[b, : alone.shape[1]]
            assert torch.equal(row, alone[0]) and (batched[b, alone.shape[1] :] == PAD).all()
    assert ((greedy != PAD).sum(1) <= max_len).all() and ((beam4 != PAD).sum(1) <= max_len).all()


def test_beam_search_scores_at_least_as_well_as_greedy_by_the_models_own_measure() -> None:
    model = perturbed(tiny_model())
    source = random_batch([5, 2, 7, 3, 6, 4, 4, 5], seed=4)

    def logprob(out: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([torch.full((len(out), 1), BOS), out], dim=1)
        logits = model(source.data, source.lengths, tokens[:, :-1])
        logits[..., [PAD, BOS, 1]] = float("-inf")
        logp = logits.log_softmax(-1).gather(2, tokens[:, 1:, None]).squeeze(2)
        return (logp * (out != PAD)).sum(1)

    with torch.no_grad():
        greedy = model.generate(source.data, source.lengths, beam_size=1, max_len=12)
        beam = model.generate(source.data, source.lengths, beam_size=6, length_penalty=0.0, max_len=12)
        width = max(greedy.shape[1], beam.shape[1])
        pad = lambda t: F.pad(t, (0, width - t.shape[1]), value=PAD)  # noqa: E731
        assert (logprob(pad(beam)) >= logprob(pad(greedy)) - 1e-4).all()


def test_decoding_stops_at_eos_or_the_length_limit() -> None:
    vocab, eos_after = 8, {0: 2, 1: 4, 2: 9}  # sentence b says EOS after eos_after[b] tokens

    def step(tokens, state, memory):
        count = state + 1
        logits = torch.zeros(len(tokens), vocab)
        logits[:, 5] = 1.0
        finishing = count > memory
        logits[finishing, EOS] = 5.0
        return logits, count

    limits = torch.tensor([10, 10, 6])
    lengths = torch.tensor(list(eos_after.values()))
    out = greedy_search(step, torch.zeros(3), lengths, 3, bos=BOS, eos=EOS, pad=PAD, max_len=limits)
    assert out[0].tolist() == [5, 5, EOS, PAD, PAD, PAD] and out[1].tolist() == [5, 5, 5, 5, EOS, PAD]
    assert out[2].tolist()[:6] == [5] * 6 and out.shape == (3, 6)  # limit reached: no EOS
    beam = beam_search(step, torch.zeros(6), lengths.repeat_interleave(2), 3, 2, bos=BOS, eos=EOS, pad=PAD,
                       max_len=limits)
    assert torch.equal(beam, out)


# ---------------------------------------------------------------------------
# Loss and metrics


def test_fused_label_smoothed_loss_matches_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(700, 37, dtype=torch.float64, requires_grad=True) * 3  # rows > one chunk
    target = torch.randint(0, 37, (700,))
    weights = torch.rand(700, dtype=torch.float64)
    for eps in (0.0, 0.1):
        expected = F.cross_entropy(logits, target, label_smoothing=eps, reduction="none")
        ours = logits.detach().float().requires_grad_()
        loss, nll = smoothed_cross_entropy(ours, target, eps)
        close = dict(atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loss.double(), expected, **close)
        torch.testing.assert_close(nll.double(), F.cross_entropy(logits, target, reduction="none"), **close)
        (expected_grad,) = torch.autograd.grad((expected * weights).sum(), logits, retain_graph=True)
        (loss * weights.float()).sum().backward()
        torch.testing.assert_close(ours.grad.double(), expected_grad, **close)


def test_bleu_and_chrf_statistics_add_up_to_sacrebleus_corpus_scores() -> None:
    refs = ["A man rides a bike.", "Two dogs play in the snow.", "A girl in a red coat.", "People at a market."]
    hyps = ["A man is riding a bicycle.", "two dogs playing in snow.", "A girl in a red coat.", "People."]
    scorer = Scorer()
    halves = [scorer.sums(hyps[:1], refs[:1]), scorer.sums(hyps[1:], refs[1:])]
    total = {k: halves[0][k] + halves[1][k] for k in halves[0]}
    scores = scorer.scores(total)
    assert scores["bleu"] == pytest.approx(BLEU().corpus_score(hyps, [refs]).score)
    assert scores["bleu_lc"] == pytest.approx(BLEU(lowercase=True).corpus_score(hyps, [refs]).score)
    assert scores["chrf"] == pytest.approx(CHRF().corpus_score(hyps, [refs]).score)
    assert scores["bleu_lc"] > scores["bleu"]
    assert scorer.signatures()["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")


# ---------------------------------------------------------------------------
# Learning: reverse short sentences


def test_a_small_model_learns_to_reverse_sentences(tmp_path: Path) -> None:
    """Reversal needs attention that moves right to left over the source; > 0.9 of the
    held-out sentences must come out exactly (detokenised, capitalised, with the full stop)."""
    files = reversal_files(tmp_path)
    task = TranslateTask(job(files, {"input_feeding": True}, seed=1))
    splits = prepared.load(task)
    torch.manual_seed(0)
    model = task.build_model(splits.info)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    source, target = splits.train[0], splits.train[1]
    generator = torch.Generator().manual_seed(0)
    for _epoch in range(12):
        model.train()
        for batch in torch.randperm(len(source), generator=generator).split(64):
            loss = task.loss(model, (source.pad(batch), target.pad(batch)), splits.info)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    test = splits.test
    sums = task.eval_sums(model, tuple(column.pad(torch.arange(len(test[0]))) for column in test), splits.info)
    metrics = task.metrics({k: float(v) for k, v in sums.items()}, splits.info, prefix="test_")
    assert metrics["test_exact_match"] > 0.9, metrics
    assert metrics["test_bleu"] > 80 and metrics["test_sentences"] == 100
    sentence = "ka lu mi no"
    assert task.translate(model, [sentence], beam_size=3) == [reverse(sentence)]
