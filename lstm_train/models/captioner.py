"""Image in, tokens out: an image encoder and an LSTM decoder with attention.

Encoder.  The default (`encoder: cnn`) is a small CNN: blocks of 3x3 convolution
(+ BatchNorm) + ReLU + max-pooling that halve the height every block but the
width only in the first `width_pools` blocks; what is left of the height is
folded into the channels, so a 32 x 160 strip becomes a left-to-right sequence
of 40 column features (one every 4 px, each seeing ~18 px: most of a digit).  A
bidirectional LSTM over those columns (`encoder_lstm_layers`, default 1) gives
every column its place in the strip, which content-based attention needs to
tell "the 2nd 7" from "the 3rd 7".

Why a CNN and not an LSTM over pixel columns (`encoder: lstm`, also here):
convolutions run all positions at once and are translation-invariant, so on a
2-core CPU they learn MNIST-quality digit features within a few epochs, while
an LSTM must walk 160 columns one after the other, learns shapes slowly and
is the slower of the two per step; per-digit accuracy has to be ~99% for
5-digit strips to come out right 95% of the time.  Measured on the 2-core CPU
(2 epochs of 50k strips, no BatchNorm): strided convolutions (`downsample:
stride`, wider to cost the same) read 92.4% of test strips exactly against
93.1% for pooling; BatchNorm lifted pooling to 97.3% for ~10% more time.

Decoder.  An LSTM fed at each step the previous token's embedding and an
attention context (additive, Bahdanau-style, over the encoder columns, queried
with the decoder's previous top hidden state); logits come from the new hidden
state and the context.  `attention: false` replaces the context by one fixed
summary of the image (the encoder LSTM's final states, or the column mean):
the classic sequence-to-sequence bottleneck, kept as a baseline.

Training is teacher-forced (`forward`).  Inference (`generate`) is greedy or
beam search (the translator's too: `lstm_train.models.decoding`), writes only
digits and EOS, and stops at EOS or after `max_len` tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.strips import BOS, EOS, PAD
from .decoding import beam_search, greedy_search, repeat_rows


class CNNEncoder(nn.Module):
    """uint8/float images [B, H, W] -> column features [B, T, C]."""

    def __init__(
        self, height: int, channels: list[int], width_pools: int, dropout: float, batch_norm: bool = False,
        downsample: str = "pool",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, h = 1, height
        for i, c_out in enumerate(channels):
            pool = (2, 2) if i < width_pools else (2, 1)
            stride = pool if downsample == "stride" else 1
            layers.append(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            if downsample == "pool":
                layers.append(nn.MaxPool2d(pool, pool))
            c_in, h = c_out, (h + 1) // 2 if downsample == "stride" else h // 2
        if h < 1:
            raise ValueError(f"{len(channels)} pooling blocks leave nothing of height {height}")
        # channels_last: oneDNN's fast layout on CPU (measured ~1.5-2x for these small convs).
        self.net = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.drop = nn.Dropout(dropout)
        self.out_size = c_in * h
        self.stride = 2 ** min(width_pools, len(channels))  # pixels per column

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net(x.unsqueeze(1).contiguous(memory_format=torch.channels_last))  # [B, C, h, T]
        b, c, h, t = f.shape
        return self.drop(f.reshape(b, c * h, t).transpose(1, 2))


class Captioner(nn.Module):
    """Digit strip to digit sequence: an encoder over the strip's columns, an LSTM decoder (with
    attention) over what it read."""

    def __init__(
        self,
        *,
        vocab_size: int,
        height: int,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
        embed_size: int = 32,
        encoder: str = "cnn",
        channels: list[int] = (16, 32, 64),
        width_pools: int = 2,
        batch_norm: bool = True,
        downsample: str = "pool",
        encoder_lstm_layers: int = 1,
        encoder_hidden: int | None = None,
        bidirectional: bool = True,
        attention: bool = True,
        attention_size: int | None = None,
        max_len: int = 6,
        beam_size: int = 1,
    ) -> None:
        super().__init__()
        self.vocab_size, self.max_len, self.beam_size = vocab_size, max_len, beam_size
        self.attention, self.num_layers, self.hidden_size = attention, num_layers, hidden_size
        feat = self._build_encoder(height, encoder, list(channels), width_pools, dropout, batch_norm, downsample,
                                   encoder_lstm_layers, encoder_hidden or hidden_size, bidirectional)
        self._build_decoder(feat, vocab_size, embed_size, hidden_size, num_layers, dropout, attention,
                            attention_size or hidden_size)

    def _build_encoder(self, height: int, encoder: str, channels: list[int], width_pools: int, dropout: float,
                       batch_norm: bool, downsample: str, encoder_lstm_layers: int, encoder_hidden: int,
                       bidirectional: bool) -> int:
        """The image encoder (a CNN over the strip, or none: pixel columns as they are), then the
        LSTM over its columns; the size of the features each column ends with."""
        if encoder == "cnn":
            self.cnn: CNNEncoder | None = CNNEncoder(
                height, channels, width_pools, dropout, batch_norm, downsample
            )
            feat = self.cnn.out_size
        elif encoder == "lstm":
            if encoder_lstm_layers < 1:
                raise ValueError("encoder 'lstm' reads pixel columns with an LSTM: encoder_lstm_layers must be >= 1")
            self.cnn, feat = None, height
        else:
            raise ValueError(f"unknown encoder {encoder!r}: 'cnn' or 'lstm'")
        self.enc_rnn: nn.LSTM | None = None
        if encoder_lstm_layers > 0:
            self.enc_rnn = nn.LSTM(
                feat,
                encoder_hidden,
                num_layers=encoder_lstm_layers,
                batch_first=True,
                bidirectional=bidirectional,
                dropout=dropout if encoder_lstm_layers > 1 else 0.0,
            )
            feat = encoder_hidden * (2 if bidirectional else 1)
        return feat

    def _build_decoder(self, feat: int, vocab_size: int, embed_size: int, hidden_size: int, num_layers: int,
                       dropout: float, attention: bool, att: int) -> None:
        """The LSTM decoder over the encoder's `feat`-sized columns: its initial state from their
        summary, additive attention over them (`attention`), the output layer.  Built after the
        encoder: the order modules are made in is the order their weights draw from the seed."""
        self.embed = nn.Embedding(vocab_size, embed_size, padding_idx=PAD)
        self.decoder = nn.LSTM(
            embed_size + feat, hidden_size, num_layers=num_layers, batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.init_h = nn.Linear(feat, hidden_size * num_layers)
        self.init_c = nn.Linear(feat, hidden_size * num_layers)
        if attention:
            self.att_key = nn.Linear(feat, att, bias=False)
            self.att_query = nn.Linear(hidden_size, att)
            self.att_v = nn.Linear(att, 1, bias=False)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size + feat, vocab_size)

    # -- encoder ---------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, H, W] (uint8 0..255 or float 0..1) -> (columns [B, T, F], summary [B, F])."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        feats = self.cnn(x) if self.cnn is not None else x.transpose(1, 2)
        summary = None
        if self.enc_rnn is not None:
            feats, (h, _) = self.enc_rnn(feats)
            if self.enc_rnn.bidirectional:  # last layer: forward's end and backward's start
                summary = torch.cat([h[-2], h[-1]], dim=1)
            else:
                summary = h[-1]
        if summary is None:
            summary = feats.mean(1)
        return feats, summary

    def _init_state(self, summary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = summary.shape[0]
        shape = (b, self.num_layers, self.hidden_size)
        h = torch.tanh(self.init_h(summary)).view(shape).transpose(0, 1).contiguous()
        c = self.init_c(summary).view(shape).transpose(0, 1).contiguous()
        return h, c

    def _step(self, tokens, state, feats, keys, summary):
        """One decoder step: tokens [B] -> log-probs [B, V], new state, attention weights [B, T]."""
        h, c = state
        if self.attention:
            scores = self.att_v(torch.tanh(keys + self.att_query(h[-1])[:, None, :])).squeeze(2)
            weights = scores.float().softmax(dim=1).to(feats.dtype)
            context = torch.bmm(weights[:, None, :], feats).squeeze(1)
        else:
            weights = None
            context = summary
        inp = torch.cat([self.embed(tokens), context.to(feats.dtype)], dim=1)[:, None, :]
        out, (h, c) = self.decoder(inp, (h, c))
        logits = self.out(self.drop(torch.cat([out[:, 0], context], dim=1)))
        return logits, (h, c), weights

    # -- training: teacher forcing ------------------------------------------------

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, L-1, V] for predicting tokens[:, 1:] from tokens[:, :-1]."""
        return self.teacher_forced(self.encode(images), tokens)

    def teacher_forced(self, memory: tuple[torch.Tensor, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
        feats, summary = memory
        keys = self.att_key(feats) if self.attention else None
        state = self._init_state(summary)
        logits = []
        for t in range(tokens.shape[1] - 1):
            step_logits, state, _ = self._step(tokens[:, t], state, feats, keys, summary)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    # -- inference ----------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        images: torch.Tensor,
        beam_size: int | None = None,
        max_len: int | None = None,
        memory: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Decoded tokens [B, <= max_len] (without BOS; EOS then PAD after each sequence's end).

        `memory` is `encode(images)` when the caller has it already.
        """
        beam_size = beam_size or self.beam_size
        max_len = max_len or self.max_len
        memory = memory if memory is not None else self.encode(images)
        if beam_size > 1:
            return self._beam(memory, beam_size, max_len)
        return self._greedy(memory, max_len)

    def _decode_step(self, tokens, state, memory):
        """The step function of `decoding`: memory is (feats, keys, summary)."""
        logits, state, _ = self._step(tokens, state, *memory)
        return logits, state

    def _memory(self, memory: tuple[torch.Tensor, torch.Tensor], k: int):
        feats, summary = repeat_rows(memory[0], k), repeat_rows(memory[1], k)
        keys = self.att_key(feats) if self.attention else None
        return (feats, keys, summary), self._init_state(summary)

    def _greedy(self, memory: tuple[torch.Tensor, torch.Tensor], max_len: int) -> torch.Tensor:
        """Decoding writes digits or EOS: PAD and BOS are never outputs."""
        step_memory, state = self._memory(memory, 1)
        feats = memory[0]
        return greedy_search(self._decode_step, state, step_memory, feats.shape[0], bos=BOS, eos=EOS, pad=PAD,
                             max_len=max_len, forbidden=(PAD, BOS), device=feats.device)

    def _beam(self, memory: tuple[torch.Tensor, torch.Tensor], k: int, max_len: int) -> torch.Tensor:
        """Beam search (see `decoding.beam_search`): the likeliest sequence by summed log-probability."""
        step_memory, state = self._memory(memory, k)
        feats = memory[0]
        return beam_search(self._decode_step, state, step_memory, feats.shape[0], k, bos=BOS, eos=EOS, pad=PAD,
                           max_len=max_len, forbidden=(PAD, BOS), reorder=_select_layers_state,
                           device=feats.device)


def _select_layers_state(state: tuple[torch.Tensor, torch.Tensor], rows: torch.Tensor):
    """(h, c) of shape [layers, N, H]: keep `rows` of N."""
    h, c = state
    return h.index_select(1, rows), c.index_select(1, rows)
