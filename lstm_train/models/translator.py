"""Sequence to sequence of unequal lengths: an attention LSTM encoder-decoder (Bahdanau 2015, Luong 2015).

Encoder.  Source subword embeddings read by a (bi)LSTM (`PaddedLSTM`: padding
never changes a result).  Its outputs are the attention memory; its final
states start the decoder (through a tanh bridge).

Decoder.  An LSTM over the target embeddings, with attention over the encoder
outputs, masked so padded source positions get exactly zero weight:

* `luong` (general): score = h_t . W_a s, queried with the decoder's new state
  h_t; the attentional state is h~_t = tanh(W_c [context; h_t]).  With
  `input_feeding`, h~_{t-1} joins the next input, so the decoder knows what it
  attended to; without it, the whole teacher-forced decoder is one LSTM call over
  all steps plus batched attention (several times faster on CPU).
* `bahdanau` (additive): score = v . tanh(W_k s + W_q h_{t-1}), queried with the
  previous state; the context joins the LSTM's input, and h~_t is computed as above.

Logits come from h~_t, through the target embedding matrix when
`tie_embeddings` (Press & Wolf 2017: fewer parameters, better with small data).

CPU speed (measured here; see ../shared/notes/verified-here.md): step loops
iterate `unbind(1)` slices (indexing x[:, t] makes every backward step add a
full-size zero tensor), the first layer's input projection of all target
embeddings is one matmul before the loop, and dropout masks come from random
bytes (`torch.bernoulli` is ~9x slower on this CPU).

Decoding (`generate`): greedy or batched beam search with length normalisation,
shared with the captioner (`lstm_train.models.decoding`).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data.subword import BOS, EOS, PAD, UNK
from .decoding import beam_search, greedy_search, repeat_rows
from .sequence import PaddedLSTM, byte_dropout


class Memory(NamedTuple):
    """What the decoder attends over, for B rows (or B * beam rows)."""

    outputs: torch.Tensor  # [B, S, E] encoder outputs (values)
    keys: torch.Tensor  # [B, S, K] their projections for scoring
    mask: torch.Tensor  # [B, S] True on real source positions


class Translator(nn.Module):
    def __init__(
        self,
        *,
        source_vocab: int,
        target_vocab: int,
        embed_size: int = 256,
        hidden_size: int = 256,
        num_layers: int = 2,
        bidirectional: bool = True,
        decoder_hidden: int = 512,
        decoder_layers: int = 1,
        attention: Literal["luong", "bahdanau"] = "luong",
        input_feeding: bool = True,
        dropout: float = 0.3,
        tie_embeddings: bool = True,
        share_embeddings: bool = False,
        vocabularies: tuple[Any, Any] | None = None,
    ) -> None:
        super().__init__()
        # (source, target) subword vocabularies, for reading and writing text; not weights.
        self.vocabularies = vocabularies
        self.attention, self.input_feeding, self.p = attention, input_feeding, dropout
        self.decoder_hidden, self.decoder_layers = decoder_hidden, decoder_layers
        self.target_embed = nn.Embedding(target_vocab, embed_size, padding_idx=PAD)
        if share_embeddings:
            if source_vocab != target_vocab:
                raise ValueError("share_embeddings needs one joint vocabulary for source and target")
            self.source_embed = self.target_embed
        else:
            self.source_embed = nn.Embedding(source_vocab, embed_size, padding_idx=PAD)
        for table in (self.source_embed, self.target_embed):
            nn.init.normal_(table.weight, std=embed_size**-0.5)
            with torch.no_grad():
                table.weight[PAD].zero_()
        self.encoder = PaddedLSTM(embed_size, hidden_size, num_layers, bidirectional, dropout)
        memory_size = self.encoder.out_features
        self.bridge = nn.Linear(memory_size, decoder_hidden * decoder_layers)
        rnn_input = embed_size + (decoder_hidden if input_feeding else 0) + (memory_size if attention == "bahdanau" else 0)
        self.decoder = nn.LSTM(rnn_input, decoder_hidden, decoder_layers, batch_first=True,
                               dropout=dropout if decoder_layers > 1 else 0.0)
        self.att_key = nn.Linear(memory_size, decoder_hidden, bias=False)
        if attention == "bahdanau":
            self.att_query = nn.Linear(decoder_hidden, decoder_hidden)
            self.att_v = nn.Linear(decoder_hidden, 1, bias=False)
        self.combine = nn.Linear(memory_size + decoder_hidden, decoder_hidden, bias=False)
        if tie_embeddings:
            self.to_embed = nn.Linear(decoder_hidden, embed_size, bias=False) if embed_size != decoder_hidden else None
            self.out = None
            self.out_bias = nn.Parameter(torch.zeros(target_vocab))
        else:
            self.to_embed = None
            self.out = nn.Linear(decoder_hidden, target_vocab)

    # -- encoder ---------------------------------------------------------------------

    def encode(self, source: torch.Tensor, lengths: torch.Tensor) -> tuple[Memory, tuple[torch.Tensor, torch.Tensor]]:
        """source ids [B, S] and lengths [B] -> (memory, initial decoder state (h, c) [layers, B, H])."""
        x = byte_dropout(self.source_embed(source), self.p, self.training)
        outputs, final = self.encoder(x, lengths)
        outputs = byte_dropout(outputs, self.p, self.training)
        mask = torch.arange(source.shape[1], device=source.device)[None, :] < lengths.to(source.device)[:, None]
        b = source.shape[0]
        h = torch.tanh(self.bridge(final)).view(b, self.decoder_layers, self.decoder_hidden).transpose(0, 1)
        h = h.contiguous()
        return Memory(outputs, self.att_key(outputs), mask), (h, torch.zeros_like(h))

    # -- attention -----------------------------------------------------------------------

    def attend(self, query: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Context vectors for queries [B, T, H] (or [B, H]): softmax-weighted encoder outputs, where
        padded source positions get exactly zero weight."""
        single = query.dim() == 2
        q = query[:, None, :] if single else query
        if self.attention == "luong":
            scores = torch.bmm(q, memory.keys.transpose(1, 2))  # [B, T, S]
        else:
            scores = self.att_v(torch.tanh(memory.keys[:, None, :, :] + self.att_query(q)[:, :, None, :])).squeeze(3)
        scores = scores.float().masked_fill(~memory.mask[:, None, :], float("-inf"))
        weights = scores.softmax(dim=2).to(memory.outputs.dtype)
        context = torch.bmm(weights, memory.outputs)
        return context[:, 0] if single else context

    def attentional(self, context: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """h~ = tanh(W_c [context; h]) (Luong's attentional hidden state)."""
        return torch.tanh(self.combine(torch.cat([context, h.to(context.dtype)], dim=-1)))

    # -- output ---------------------------------------------------------------------------

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """Attentional states [..., H] -> target logits [..., V]."""
        states = byte_dropout(states, self.p, self.training)
        if self.out is not None:
            return self.out(states)
        if self.to_embed is not None:
            states = self.to_embed(states)
        return F.linear(states, self.target_embed.weight, self.out_bias)

    # -- teacher forcing ------------------------------------------------------------------

    def forward(self, source: torch.Tensor, source_lengths: torch.Tensor, target_in: torch.Tensor,
                select: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits for the token after each of target_in [B, T] (BOS y1 ... yn):
        [B, T, V], or [N, V] for the N positions where `select` [B, T] is True (the real
        target tokens: no output-layer work is spent on padding)."""
        states = self.states(source, source_lengths, target_in)
        return self.logits(states if select is None else states[select])

    def states(self, source: torch.Tensor, source_lengths: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        """Attentional states h~ [B, T, H] under teacher forcing."""
        memory, state = self.encode(source, source_lengths)
        emb = byte_dropout(self.target_embed(target_in), self.p, self.training)
        if self.attention == "luong" and not self.input_feeding:
            out, _ = self.decoder(emb, state)
            return self.attentional(self.attend(out, memory), out)
        return self._step_loop(emb, state, memory)

    def _layer_weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rnn = self.decoder
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
        bias = getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")
        return w_ih, w_hh, bias

    @staticmethod
    def _cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = gates.float().chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def _recurrent_weights(self, e: int, device_type: str):
        """The decoder LSTM's weights as the step loops use them: the first layer's input weights
        split into the embedding's share (applied to all steps at once in teacher forcing) and the
        rest ([feed; context] and the recurrent h, one matmul a step), plus the upper layers."""
        w_ih, w_hh, bias = self._layer_weights(0)
        w_rest = torch.cat([w_ih[:, e:], w_hh], dim=1)
        if torch.is_autocast_enabled(device_type):  # cast once: autocast caches parameters, not this
            w_rest = w_rest.to(torch.get_autocast_dtype(device_type))
        upper = [self._layer_weights(layer) for layer in range(1, self.decoder_layers)]
        return w_ih[:, :e], bias, w_rest, upper

    def _advance(self, gates_in: torch.Tensor, feed: torch.Tensor | None, h: list[torch.Tensor],
                 c: list[torch.Tensor], memory: Memory, w_rest: torch.Tensor, upper: list) -> torch.Tensor:
        """One decoder step, given the embedding's share of the first layer's gates; updates the
        per-layer h and c (float32 cell state) in place and returns the attentional state h~."""
        extra = [feed] if feed is not None else []
        if self.attention == "bahdanau":
            extra.append(self.attend(h[-1], memory))
        gates = gates_in + F.linear(torch.cat([*extra, h[0]], dim=1).to(gates_in.dtype), w_rest)
        h[0], c[0] = self._cell(gates, c[0])
        for layer, (w_i, w_h, b) in enumerate(upper, start=1):
            x = byte_dropout(h[layer - 1], self.p, self.training)
            gates = F.linear(x, w_i, b) + F.linear(h[layer].to(x.dtype), w_h)
            h[layer], c[layer] = self._cell(gates, c[layer])
        top = h[-1]
        return self.attentional(self.attend(top, memory), top)

    def _step_loop(self, emb: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], memory: Memory) -> torch.Tensor:
        """Teacher forcing one step at a time (input feeding or Bahdanau attention need the previous
        step's output).  The embeddings' share of the first layer's gates is one matmul up front."""
        w_emb, bias, w_rest, upper = self._recurrent_weights(emb.shape[-1], emb.device.type)
        h, c = list(state[0].unbind(0)), [x.float() for x in state[1].unbind(0)]
        feed = emb.new_zeros(emb.shape[0], self.decoder_hidden) if self.input_feeding else None
        outputs = []
        for gates_t in F.linear(emb, w_emb, bias).unbind(1):
            att = self._advance(gates_t, feed, h, c, memory, w_rest, upper)
            outputs.append(att)
            feed = att if self.input_feeding else None
        return torch.stack(outputs, dim=1)

    # -- inference ---------------------------------------------------------------------

    def _decoder(self, device_type: str):
        """The step function for `decoding`: state is (h [L, N, H], c [L, N, H] float32, feed [N, H]
        or None), the same arithmetic as teacher forcing (float32 cell state under autocast too)."""
        w_emb, bias, w_rest, upper = self._recurrent_weights(self.target_embed.embedding_dim, device_type)

        def step(tokens: torch.Tensor, state, memory: Memory):
            h, c, feed = state
            h, c = list(h.unbind(0)), list(c.unbind(0))
            att = self._advance(F.linear(self.target_embed(tokens), w_emb, bias), feed, h, c, memory, w_rest, upper)
            return self.logits(att), (torch.stack(h), torch.stack(c), att if self.input_feeding else None)

        return step

    @staticmethod
    def _reorder(state, rows: torch.Tensor):
        h, c, feed = state
        return h.index_select(1, rows), c.index_select(1, rows), None if feed is None else feed.index_select(0, rows)

    @torch.no_grad()
    def generate(self, source: torch.Tensor, lengths: torch.Tensor, beam_size: int = 1,
                 length_penalty: float = 1.0, max_len: int | torch.Tensor = 100) -> torch.Tensor:
        """Target ids [B, L] (no BOS; EOS then PAD after each sentence's end).  `max_len` is an int
        or per-sentence [B] (e.g. 1.5 x the source length + 10): a guard against endless loops."""
        memory, (h, c) = self.encode(source, lengths)
        b, dev = source.shape[0], source.device
        c = c.float()
        feed = h.new_zeros(b, self.decoder_hidden) if self.input_feeding else None
        step = self._decoder(dev.type)
        common = dict(bos=BOS, eos=EOS, pad=PAD, max_len=max_len, forbidden=(PAD, BOS, UNK), device=dev)
        if beam_size <= 1:
            return greedy_search(step, (h, c, feed), memory, b, **common)
        memory = Memory(*(repeat_rows(x, beam_size) for x in memory))
        state = (h.repeat_interleave(beam_size, dim=1), c.repeat_interleave(beam_size, dim=1),
                 repeat_rows(feed, beam_size))
        return beam_search(step, state, memory, b, beam_size, length_penalty=length_penalty,
                           reorder=self._reorder, **common)
