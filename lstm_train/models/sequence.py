"""An LSTM over padded variable-length batches where padding never changes a result.

Shared by every variable-length task (text classification, tagging, the
translation encoder).  The usual tool, `pack_padded_sequence`, leaves oneDNN's
fast LSTM kernel on CPU (measured here: 109 ms vs 51 ms for the same bf16 batch),
so this module runs `nn.LSTM` on the padded batch and makes padding harmless:

* forward direction: an LSTM reads left to right, so positions after a
  sequence's end cannot influence the ones before it; its final state is the
  output at position `length - 1`, gathered per sequence (not `h_n`, which has
  read the padding);
* backward direction: each sequence is reversed within its own length (padding
  stays at the end), read left to right by the backward LSTM, and reversed back,
  so the backward state at position 0 has read exactly the sequence.

Outputs at padded positions are zero.  The test suite checks that a padded batch
gives each sequence the outputs it gets alone, to 1e-5.
"""

from __future__ import annotations

import torch
from torch import nn


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first `lengths[b]` steps of each row of x [B, T, ...]; padding stays in place."""
    steps = torch.arange(x.shape[1], device=x.device)
    source = lengths.to(x.device)[:, None] - 1 - steps[None, :]
    source = torch.where(source >= 0, source, steps[None, :])  # [B, T]
    index = source.reshape(*source.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def last_real(outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """outputs [B, T, H] at each row's last real position: [B, H]."""
    index = (lengths.to(outputs.device) - 1).clamp_min(0)[:, None, None].expand(-1, 1, outputs.shape[-1])
    return outputs.gather(1, index)[:, 0]


class PaddedLSTM(nn.Module):
    """`nn.LSTM(batch_first=True)` for padded batches with lengths; see the module docstring.

    forward(x [B, T, input], lengths [B]) -> (outputs [B, T, H * dirs], final [B, H * dirs]),
    `final` being the last layer's forward state at each sequence's end, concatenated
    with its backward state at position 0 when bidirectional.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden_size, self.num_layers, self.bidirectional = hidden_size, num_layers, bidirectional
        self.out_features = hidden_size * (2 if bidirectional else 1)
        if not bidirectional:  # one call for every layer: padding at the end is harmless left to right
            self.forward_layers = nn.ModuleList([nn.LSTM(input_size, hidden_size, num_layers, batch_first=True,
                                                         dropout=dropout if num_layers > 1 else 0.0)])
            self.backward_layers = nn.ModuleList()
        else:
            sizes = [input_size] + [2 * hidden_size] * (num_layers - 1)
            self.forward_layers = nn.ModuleList([nn.LSTM(s, hidden_size, batch_first=True) for s in sizes])
            self.backward_layers = nn.ModuleList([nn.LSTM(s, hidden_size, batch_first=True) for s in sizes])
        self.between = nn.Dropout(dropout) if num_layers > 1 and bidirectional else nn.Identity()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None])[..., None]
        if not self.bidirectional:
            out, _ = self.forward_layers[0](x)
            out = out * mask
            return out, last_real(out, lengths)
        h = x
        for i, (fwd, bwd) in enumerate(zip(self.forward_layers, self.backward_layers)):
            if i:
                h = self.between(h)
            out_f, _ = fwd(h)
            out_b, _ = bwd(reverse_padded(h, lengths))
            h = torch.cat([out_f, reverse_padded(out_b, lengths)], dim=-1) * mask
        final = torch.cat([last_real(h[..., : self.hidden_size], lengths), h[:, 0, self.hidden_size :]], dim=-1)
        return h, final


def pool(outputs: torch.Tensor, final: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """One vector per sequence from PaddedLSTM's (outputs [B, T, H], final [B, H]): the final state
    ("last"), or the outputs' maximum or mean over each sequence's real steps only."""
    if how == "last":
        return final
    real = (torch.arange(outputs.shape[1], device=outputs.device)[None, :] < lengths.to(outputs.device)[:, None])[..., None]
    if how == "max":
        return outputs.masked_fill(~real, float("-inf")).amax(1)
    return outputs.sum(1) / lengths.to(outputs.device, outputs.dtype)[:, None]  # padded outputs are zero


def byte_dropout(x: torch.Tensor, p: float, training: bool, shared_dims: tuple[int, ...] = ()) -> torch.Tensor:
    """Inverted dropout with a mask from random bytes (p rounded to a multiple of 1/256).
    `shared_dims`: dimensions of x the mask is the same along (1 for one mask per sequence:
    variational / "locked" dropout)."""
    if not training or p <= 0:
        return x
    drop = round(p * 256)
    shape = [1 if d in shared_dims else n for d, n in enumerate(x.shape)]
    keep = torch.empty(shape, dtype=torch.uint8, device=x.device).random_() >= drop
    return x * keep.to(x.dtype) * (256 / (256 - drop))
