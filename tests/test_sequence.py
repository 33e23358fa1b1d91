"""Variable-length building blocks: ragged storage, padding, and an LSTM padding cannot change."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstm_train.data.ragged import Ragged, gather, sample_lengths
from lstm_train.data.vocab import PAD, UNK, Vocab, VocabError
from lstm_train.models.sequence import PaddedLSTM, reverse_padded


def test_ragged_pads_and_selects_without_mixing_samples() -> None:
    seqs = [[5, 6, 7], [8], [], [9, 10]]
    r = Ragged.from_sequences(seqs)
    assert len(r) == 4 and r.lengths_cpu.tolist() == [3, 1, 0, 2]
    padded = r.pad(torch.tensor([3, 0, 2]), pad_value=-1)
    assert padded.data.tolist() == [[9, 10, -1], [5, 6, 7], [-1, -1, -1]]
    assert padded.lengths.tolist() == [2, 3, 0]
    assert padded.mask().tolist() == [[True, True, False], [True, True, True], [False, False, False]]
    sub = r.select([3, 1])
    assert [sub[i].tolist() for i in range(2)] == [[9, 10], [8]]
    feats = Ragged.from_sequences([torch.ones(2, 3), torch.zeros(1, 3)], dtype=torch.float)
    assert feats.pad(torch.tensor([1, 0])).data.shape == (2, 2, 3)
    dense = torch.arange(4) * 10
    batch = gather((r, dense), torch.tensor([1, 3]))
    assert batch[0].data.tolist() == [[8, 0], [9, 10]] and batch[1].tolist() == [10, 30]
    assert sample_lengths((r, Ragged.from_sequences([[1], [1, 1], [1], [1]]))).tolist() == [3, 2, 1, 2]
    assert sample_lengths((dense,)) is None
    with pytest.raises(ValueError, match="add up"):
        Ragged.from_lengths(torch.zeros(3), torch.tensor([1, 1]))


def test_reverse_padded_keeps_padding_in_place() -> None:
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    assert reverse_padded(x, torch.tensor([3, 2])).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_padded_batch_gives_each_sequence_its_own_outputs(bidirectional: bool, layers: int) -> None:
    torch.manual_seed(0)
    lstm = PaddedLSTM(5, 7, layers, bidirectional).eval()
    lengths = torch.tensor([4, 1, 6, 3])
    x = torch.randn(4, 6, 5)
    out, final = lstm(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone, alone_final = lstm(x[b : b + 1, :n], lengths[b : b + 1])
        torch.testing.assert_close(out[b, :n], alone[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(final[b], alone_final[0], atol=1e-5, rtol=0)
        assert (out[b, n:] == 0).all()


def test_same_results_as_packed_bidirectional_nn_lstm() -> None:
    """The reversal trick computes what pack_padded_sequence + nn.LSTM(bidirectional) does."""
    torch.manual_seed(1)
    ours = PaddedLSTM(3, 4, 2, bidirectional=True).eval()
    ref = nn.LSTM(3, 4, 2, batch_first=True, bidirectional=True).eval()
    with torch.no_grad():
        for layer in range(2):
            for suffix, module in (("", ours.forward_layers[layer]), ("_reverse", ours.backward_layers[layer])):
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, f"{kind}_l{layer}{suffix}").copy_(getattr(module, f"{kind}_l0"))
    lengths = torch.tensor([5, 2, 3])
    x = torch.randn(3, 5, 3)
    out, final = ours(x, lengths)
    packed, (h_n, _) = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    expected, _ = pad_packed_sequence(packed, batch_first=True, total_length=5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(final, torch.cat([h_n[-2], h_n[-1]], dim=1), atol=1e-5, rtol=0)


def test_vocabulary_round_trip_and_digest_check(tmp_path) -> None:
    vocab = Vocab.train([["The", "cat", "sat"], ["the", "dog", "sat"], ["a. m.", "x"]], min_freq=2)
    assert vocab.encode(["THE", "sat", "unseen"])[-1] == UNK
    assert vocab.word(PAD) == "<pad>" and "the" in vocab.words(vocab.encode(["The"]))
    vocab.save(tmp_path / "vocab.json")
    again = Vocab.load(tmp_path / "vocab.json")
    assert again == vocab and again.encode_batch([["sat", "the"]]) == [vocab.encode(["sat", "the"])]
    assert Vocab.train([["other", "words"]]).digest != vocab.digest  # the digest tells vocabularies apart
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(VocabError, match="bad.json"):
        Vocab.load(tmp_path / "bad.json")
