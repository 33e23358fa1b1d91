"""Sequence labelling: CoNLL-U and column parsing (edge cases and bad input), the CRF against brute
force, the char CNN against Conv1d, padding invariance of the tagger, entity counts against seqeval,
and the task's metrics on small generated files."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from seqeval.metrics import f1_score, precision_score, recall_score

from lstm_train.data.readers import conll
from lstm_train.data import tagging
from lstm_train.data.store import prepared
from lstm_train.data.readers.conll import ConllError
from lstm_train.data.ragged import gather
from lstm_train.data.vocab import Vocab
from lstm_train.tasks.tag_entities import entity_counts, invalid_transitions, is_bio, precision_recall_f1
from lstm_train.models.crf import CRF
from lstm_train.models.tagger import CharCNN, Tagger

CONLLU = """# newdoc id = d1
# sent_id = s1
# text = I don't know.
1\tI\tI\tPRON\tPRP\tCase=Nom\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No
4.1\tgone\tgo\t_\t_\t_\t_\t_\t4:conj\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = s2
1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_

"""


def read_conllu(path: Path) -> list[conll.TaggedSentence]:
    return list(conll.iter_conllu(path))


def read_columns(path: Path) -> list[conll.TaggedSentence]:
    return list(conll.iter_columns(path))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- CoNLL-U ------------------------------------------------------------------------------


def test_conllu_tags_words_only_and_any_column(tmp_path):
    path = write(tmp_path, "a.conllu", CONLLU)
    sentences = read_conllu(path)
    assert [s.words for s in sentences] == [["I", "do", "n't", "know", "."], ["Yes"]]
    assert sentences[0].tags == ["PRON", "AUX", "PART", "VERB", "PUNCT"]
    assert sentences[0].line == 1 and sentences[1].line == 12
    assert conll.read_tagged(path, "auto", "xpos")[0].tags == ["PRP", "VBP", "RB", "VB", "."]
    assert conll.read_tagged(path, "auto", "deprel")[0].tags == ["nsubj", "aux", "advmod", "root", "punct"]
    assert conll.read_tagged(path, "conllu", "feats")[0].tags[0] == "Case=Nom"


def test_conllu_fill_keeps_everything_else(tmp_path):
    path = write(tmp_path, "a.conllu", CONLLU)
    same = conll.fill_conllu(path, "upos", lambda ss: [s.tags for s in read_conllu(path)])
    assert same == CONLLU
    filled = conll.fill_conllu(path, "upos", lambda ss: [["X"] * len(s) for s in ss])
    lines = filled.splitlines()
    assert lines[:3] == CONLLU.splitlines()[:3]  # comments kept
    assert lines[4] == "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_"  # multiword range untouched
    assert lines[7].split("\t")[3] == "X" and lines[8].split("\t")[3] == "_"  # word filled, empty node untouched
    assert sum(1 for line in lines if line.count("\t") == 9 and line.split("\t")[3] == "X") == 6


@pytest.mark.parametrize("text, column, message", [
    (CONLLU.replace("1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_", "1\tYes\tyes\tINTJ"), "upos",
     ":13: 4 tab-separated columns"),
    ("# sent_id = x\n1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n\n", "upos", ":1: a sentence with no words"),
    ("# only = comment\n\n", "upos", ":1: a sentence with no words"),
    ("\n\n  \n", "upos", "the file is empty"),
    (CONLLU, "upostag", "no CoNLL-U tag column 'upostag'; choose one of upos, xpos"),
    (CONLLU.replace("\tPRP\t", "\t_\t"), "xpos", ":4: word 'I' has no XPOS"),
    (CONLLU.replace("1\tI\tI", "one\tI\tI"), "upos", ":4:"),
])
def test_conllu_bad_input_names_file_and_line(tmp_path, text, column, message):
    path = write(tmp_path, "bad.conllu", text)
    with pytest.raises(ConllError, match=message) as caught:
        conll.read_tagged(path, "auto", column)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_not_utf8_and_missing_file(tmp_path):
    path = tmp_path / "latin1.conllu"
    path.write_bytes(CONLLU.replace("know", "kn\xf6w").encode("latin-1"))
    with pytest.raises(ConllError, match=r"latin1.conllu:3: not UTF-8"):
        read_conllu(path)
    with pytest.raises(FileNotFoundError, match="nope.conllu"):
        read_conllu(tmp_path / "nope.conllu")


# -- whitespace columns -------------------------------------------------------------------

COLUMNS = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

-DOCSTART- -X- -X- O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

"""


def test_columns_token_first_tag_last_docstart_skipped(tmp_path):
    path = write(tmp_path, "ner.txt", COLUMNS)
    sentences = conll.read_tagged(path, "auto", None)
    assert [s.words for s in sentences] == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"]]
    assert sentences[0].tags == ["B-ORG", "O", "B-MISC", "O", "O"] and sentences[0].line == 3
    assert sentences[1].tags == ["B-PER", "I-PER"] and sentences[1].line == 11
    assert conll.read_tagged(path, "columns", 2)[0].tags == ["B-NP", "B-VP", "B-NP", "I-NP", "O"]
    assert conll.read_tagged(path, "columns", None, with_tags=False)[1].tags is None


def test_columns_keep_no_break_space_inside_tokens(tmp_path):
    path = write(tmp_path, "nbsp.txt", "8\u00a01/2 CD\nmiles NNS\n")
    assert read_columns(path)[0].words == ["8\u00a01/2", "miles"]


@pytest.mark.parametrize("text, column, message", [
    ("EU B-ORG\nrejects\n", -1, r":2: one column"),
    ("EU NNP B-ORG\n", 3, r":1: 3 columns; the tag column 3 does not exist"),
    ("EU NNP B-ORG\n", 0, r"the tag column 0 does not exist"),
    ("", -1, "the file is empty"),
    ("-DOCSTART- O\n\n", -1, "no sentences"),
])
def test_columns_bad_input(tmp_path, text, column, message):
    path = write(tmp_path, "bad.txt", text)
    with pytest.raises(ConllError, match=message):
        conll.read_tagged(path, "columns", column)


def test_column_kind_must_match_format(tmp_path):
    with pytest.raises(ConllError, match="column number"):
        conll.read_tagged(write(tmp_path, "x.txt", COLUMNS), "auto", "upos")
    with pytest.raises(ConllError, match="field name"):
        conll.read_tagged(write(tmp_path, "x.conllu", CONLLU), "auto", 3)


# -- encoding -----------------------------------------------------------------------------


def test_encode_columns_chars_and_unseen_tags(tmp_path):
    train = read_conllu(write(tmp_path, "a.conllu", CONLLU))
    words = Vocab.train((s.words for s in train))
    chars = Vocab.train((list(form) for form in sorted({w for s in train for w in s.words})), lowercase=False)
    tags = ["AUX", "INTJ", "PART", "PRON", "PUNCT", "VERB"]  # the training tags, most frequent first
    width = 6  # "know" + <bos>/<eos>
    test = [conll.TaggedSentence(["Knowledgeable", "I"], ["ADJ", "PRON"], 1)]
    w, c, t = tagging.encode(test, words, chars, tags, width)
    assert w[0].tolist() == [1, words.encode(["i"])[0]]  # unseen word -> <unk>, lower-cased
    row = c.values[0].tolist()  # <bos> K n ... l e <eos>: first 2 and last 2 characters of 13
    assert row[0] == 2 and row[-1] == 3 and row[1] == 1  # 'K' (upper) never seen in training -> <unk>
    assert row[2] == chars.encode(["n"])[0] and row[4] == chars.encode(["e"])[0]
    assert t[0].tolist() == [len(tags), tags.index("PRON")]  # ADJ never in training: id len(tags)
    assert tagging.unseen_tags(test, tags) == {"ADJ": 1}


# -- CRF ----------------------------------------------------------------------------------


def brute_force(crf: CRF, emissions: torch.Tensor, length: int) -> tuple[torch.Tensor, list[int]]:
    """log Z and the best path of one sequence, by enumerating every tag sequence."""
    scores = {}
    for path in itertools.product(range(crf.num_tags), repeat=length):
        tags = torch.tensor(path + (0,) * (emissions.shape[0] - length))[None]
        scores[path] = crf.score(emissions[None], tags, torch.tensor([length]))[0].detach()
    values = torch.stack(list(scores.values()))
    return torch.logsumexp(values, 0), list(max(scores, key=lambda p: float(scores[p])))


def test_crf_matches_brute_force_with_padding():
    torch.manual_seed(0)
    crf = CRF(3)
    with torch.no_grad():
        crf.transitions.normal_()
        crf.start.normal_()
        crf.end.normal_()
    emissions = torch.randn(4, 4, 3)
    lengths = torch.tensor([4, 1, 3, 2])
    log_z = crf.log_partition(emissions, lengths)
    decoded = crf.decode(emissions, lengths)
    for b, n in enumerate(lengths.tolist()):
        expected_z, expected_path = brute_force(crf, emissions[b], n)
        torch.testing.assert_close(log_z[b], expected_z)
        assert decoded[b, :n].tolist() == expected_path
        assert decoded[b, n:].eq(0).all()
    gold = torch.randint(0, 3, (4, 4))
    nll = crf.neg_log_likelihood(emissions, gold, lengths)
    assert (nll > 0).all()
    # Padding changes nothing: garbage after each length, same results.
    noisy = emissions.clone()
    noisy[torch.arange(4)[None, :] >= lengths[:, None]] = 100.0
    torch.testing.assert_close(crf.neg_log_likelihood(noisy, gold, lengths), nll)
    assert torch.equal(crf.decode(noisy, lengths), decoded)


# -- model ----------------------------------------------------------------------------------


def test_char_cnn_equals_conv1d_with_masked_max():
    torch.manual_seed(0)
    cnn = CharCNN(num_chars=12, char_dim=5, out_dim=7, kernel=3)
    chars = torch.tensor([[2, 5, 6, 7, 3, 0, 0], [2, 9, 3, 0, 0, 0, 0], [2, 4, 11, 10, 8, 1, 3]])
    conv = torch.nn.Conv1d(5, 7, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(cnn.weight.permute(2, 1, 0))
        conv.bias.copy_(cnn.bias)
    embedded = F.embedding(chars, cnn.embedding.weight, padding_idx=0)
    embedded = embedded * (chars != 0)[..., None]
    h = conv(embedded.transpose(1, 2)).masked_fill((chars == 0)[:, None, :], float("-inf"))
    torch.testing.assert_close(cnn(chars), torch.tanh(h.amax(2)))
    # Extra padding columns change nothing.
    torch.testing.assert_close(cnn(F.pad(chars, (0, 4))), cnn(chars))


@pytest.fixture
def no_grad():
    with torch.no_grad():
        yield


@pytest.mark.parametrize("char_kind, crf", [("cnn", False), ("lstm", True), ("none", False)])
def test_padded_batch_gives_each_sentence_what_it_gets_alone(char_kind, crf, no_grad):
    torch.manual_seed(0)
    model = Tagger(num_words=30, num_chars=20, num_tags=5, word_dim=8, char_dim=6, char_kind=char_kind,
                   char_size=5, hidden_size=7, num_layers=2, dropout=0.3, crf=crf).eval()
    lengths = torch.tensor([5, 2, 3])
    words = torch.randint(4, 30, (3, 5))
    chars = torch.randint(4, 20, (3, 5, 6))
    chars[..., 0], chars[..., 4:] = 2, 0
    chars[..., 3] = 3
    # Padding positions hold junk ids: they must not matter.
    scores = model(words, chars, lengths)
    tags = torch.randint(0, 5, (3, 5))
    loss, count = model(words, chars, lengths, tags)
    assert int(count) == 10
    total = 0.0
    for b, n in enumerate(lengths.tolist()):
        alone = model(words[b : b + 1, :n], chars[b : b + 1, :n], lengths[b : b + 1])
        torch.testing.assert_close(scores[b, :n], alone[0], atol=1e-5, rtol=1e-5)
        total += float(model(words[b : b + 1, :n], chars[b : b + 1, :n], lengths[b : b + 1], tags[b : b + 1, :n])[0])
        assert model.decode(scores, lengths)[b, :n].tolist() == model.decode(alone, lengths[b : b + 1])[0].tolist()
    assert abs(float(loss) - total) < 1e-4


def test_unknown_tags_do_not_score():
    torch.manual_seed(0)
    model = Tagger(num_words=10, num_chars=10, num_tags=3, word_dim=4, char_dim=4, char_size=4, hidden_size=4).eval()
    words, chars = torch.randint(4, 10, (1, 3)), torch.randint(4, 10, (1, 3, 4))
    lengths = torch.tensor([3])
    with torch.no_grad():
        loss, count = model(words, chars, lengths, torch.tensor([[0, 3, 1]]))  # tag id 3: never in training
        scores = model(words, chars, lengths)
    assert int(count) == 2
    torch.testing.assert_close(loss, F.cross_entropy(scores[0, [0, 2]], torch.tensor([0, 1]), reduction="sum"))


def test_word_dropout_only_in_training():
    model = Tagger(num_words=10, num_chars=10, num_tags=3, word_dim=4, char_kind="none", hidden_size=4,
                   word_unk_probability=torch.tensor([0.0] * 4 + [1.0] * 6))
    words, chars, lengths = torch.tensor([[4, 5, 6]]), torch.zeros(1, 3, 4, dtype=torch.long), torch.tensor([3])
    model.eval()
    a = model(words, chars, lengths)
    b = model(torch.ones_like(words), chars, lengths)
    assert not torch.allclose(a, b)
    model.train()
    model.dropout = 0.0
    torch.testing.assert_close(model(words, chars, lengths), model(torch.ones_like(words), chars, lengths))


# -- entities -----------------------------------------------------------------------------


def test_entity_counts_match_seqeval_and_invalid_transitions():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "I-ORG", "I-ORG", "O", "B-MISC"]]
    guess = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "B-ORG", "I-ORG", "O", "I-MISC"]]
    counts = entity_counts(gold, guess)
    p, r, f1 = precision_recall_f1(counts["correct"], counts["predicted"], counts["gold"])
    assert (p, r, f1) == pytest.approx((precision_score(gold, guess), recall_score(gold, guess), f1_score(gold, guess)))
    # seqeval (like conlleval) reads "O I-ORG I-ORG" as one ORG entity: the prediction matches it.
    assert counts == {"correct": 3, "predicted": 4, "gold": 4}
    assert invalid_transitions(gold) == 1 and invalid_transitions(guess) == 1
    assert invalid_transitions([["B-PER", "I-LOC"], ["I-PER"]]) == 2
    assert is_bio(["O", "B-PER", "I-PER"]) and not is_bio(["NOUN", "VERB"]) and not is_bio(["O"])


def test_gather_keeps_char_rows():
    sentences = [conll.TaggedSentence(["a", "bb"], ["X", "Y"], 1), conll.TaggedSentence(["ccc"], ["X"], 3)]
    words, chars = Vocab.train(s.words for s in sentences), Vocab.train([["a"], ["b"], ["c"]], lowercase=False)
    columns = tagging.encode(sentences, words, chars, ["X", "Y"], 5)
    (w, n), (c, _), (t, _) = gather(columns, torch.tensor([1, 0]))
    assert w.shape == (2, 2) and c.shape == (2, 2, 5) and n.tolist() == [1, 2]
    assert c[0, 1].eq(0).all() and c[0, 0].tolist()[:5] == [2, *chars.encode(list("ccc")), 3]


def test_run_files_must_match_on_resume(tmp_path):
    from lstm_train.config import validate_job
    from lstm_train.tasks import get_task
    from lstm_train.tasks.base import RunFileMismatch

    train = write(tmp_path, "train.conllu", CONLLU)
    job = validate_job({"name": "t", "task": "tag", "data": {"root": str(tmp_path), "train": "train.conllu",
                                                              "val": None, "test": "train.conllu"}}, "test")
    task = get_task("tag")(job, tmp_path / "run")
    info = prepared.load(task).info
    (tmp_path / "run").mkdir()
    task.write_run_files(tmp_path / "run", info)
    task.write_run_files(tmp_path / "run", info)  # a resume over the same data: fine
    train.write_text(CONLLU.replace("know", "see"))  # the data changed since the run began
    with pytest.raises(RunFileMismatch, match="vocab_words.json: this file .*not the one"):
        task.write_run_files(tmp_path / "run", prepared.load(task).info)
