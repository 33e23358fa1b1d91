"""The leaf of the job schema: the bases every section, task and data module builds on.

It imports nothing of lstm_train, so `config` (the whole job), `tasks` (each
task's `data:`/`model:` sections) and the data modules can all use it without
importing each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class ConfigError(ValueError):
    """A job spec, override or input that cannot be used; the message says why and what would do."""


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are checked on assignment."""

    # allow_inf_nan=False: `optim.lr=.inf` or a NaN is refused by its key, in every section at once
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)


class ModelBase(Section):
    """The LSTM knobs every task's model has."""

    hidden_size: int = Field(64, ge=1, description="LSTM hidden units (per direction)")
    num_layers: int = Field(1, ge=1, description="stacked LSTM layers")
    bidirectional: bool = Field(False, description="an LSTM reading each sequence both ways")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability (between LSTM layers, and where the "
                           "task's model applies it)")


# The fields by which a data section declares its validation split (`DataBase.validation`).
VALIDATION_SIZES = ("val_size", "val_fraction")


class DataBase(Section):
    """What every task's data section has: how batches are cut.

    `batch_size` is per process unless `global_batch_size` is set; then the global
    batch is split over the processes (and over `train.grad_accum_steps`
    micro-batches), so the same job takes the same optimizer steps over the same
    samples on 1, 2 or N processes.
    """

    batch_size: int = Field(64, ge=1, description="samples per batch per process (the most one forward holds)")
    global_batch_size: int | None = Field(
        None, ge=1, description="samples per optimizer step over all processes; per process = global / world"
    )
    eval_batch_size: int = Field(1000, ge=1, description="samples per evaluation batch per process (no gradients: "
                                 "larger than batch_size fits)")
    cache_dir: str | None = Field(
        None, description="prepared (tokenized, memory-mapped) data; default $LSTM_TRAIN_CACHE or "
        "~/.cache/lstm_train/prepared (on a cluster: a directory every node sees)"
    )
    prepare_timeout: float = Field(
        3600.0, gt=0, description="seconds any wait for a preparation lasts (other ranks for rank 0; a run for "
        "another process holding the entry's lock)"
    )
    cache_group: str | None = Field(
        None, description="a group trusted to write data.cache_dir (a team cache): entries owned by it are read; "
        "without it, the cache and its entries must be yours and not writable by others"
    )

    def validation(self) -> list[str] | str:
        """How a sweep gets validation data to compare its points on (never the test split):
        [] when this data section gives the task a validation split; the overrides that make one
        (seeded) when it does not; or, when the task cannot, why not and what to set.

        Default: from the section's declared validation size, the field `val_size` (samples the
        task draws or holds out) or `val_fraction` (a share of the training data) that the task's
        `load_data` turns into `Splits.val` (the contract check holds it to that): non-zero, [];
        zero, the override back to the field's own non-zero default (`val_fraction`: else 0.1).  A
        section with neither, or whose validation data comes otherwise (files), overrides this."""
        fields = type(self).model_fields
        key = next((k for k in VALIDATION_SIZES if k in fields), None)
        if key is None:
            return (f"{type(self).__name__} declares no validation size: give it a `val_size` or `val_fraction` "
                    "field that the task's load_data turns into Splits.val, or a `validation()` method")
        if getattr(self, key):
            return []
        default = fields[key].default
        if isinstance(default, (int, float)) and not isinstance(default, bool) and default > 0:
            return [f"data.{key}={default}"]
        if key == "val_fraction":
            return ["data.val_fraction=0.1"]
        return f"data.{key} is 0 (no validation split): set data.{key} to the validation samples to use"

    def reported_metrics(self) -> dict[str, str] | None:
        """The metrics the task reports on this data (names without their val_/test_ prefix), each with
        the way it is better, "min" or "max": what `train.select.metric` may name (checked when the job
        is validated) and what `train.select.mode: auto` reads.  Counts (samples, tokens) are not
        metrics to select on and are left out.  None (the default, a task from outside lstm_train):
        not declared; a name is then checked at the first evaluation, and `train.select.mode` must be
        given for one that is not the task's primary metric."""
        return None


def default_data_root() -> str:
    """`data.root` default: $LSTM_TRAIN_DATA, else ./data."""
    return os.environ.get("LSTM_TRAIN_DATA", "./data")


class SequenceData(DataBase):
    """The data section of a variable-length task (text, tags, translation).

    Batches are cut by the loop from `Ragged` columns: with `bucketing`, each epoch's
    shuffled samples are sorted by length inside pools of `bucket_pool` batches, so a
    batch holds sequences of similar length and little padding; `max_tokens` cuts
    batches by a budget of padded tokens (batch x longest) instead of a sample count.
    """

    bucketing: bool = Field(
        True, description="batches of similar lengths (little padding); false: random batches, padded"
    )
    bucket_pool: int = Field(100, ge=1, description="batches whose samples are sorted by length together")
    max_tokens: int | None = Field(
        None, ge=1, description="padded tokens (samples x longest) per batch per process, instead of batch_size"
    )


class StreamData(DataBase):
    """The data section of a task trained over contiguous token streams (language modelling).

    The training stream is cut into `global_batch_size` (else `batch_size` x processes)
    contiguous streams; each step reads the next window of `bptt` tokens of every stream,
    and the task carries its state (an LSTM's hidden state) from one window to the next
    (truncated backpropagation through time).  `variable_bptt` draws each window's length
    as AWD-LSTM does (the base length with p 0.95, else half; N(base, 5); at least 5), from a
    generator seeded by the run's seed and the epoch, so every rank and every resume draws
    the same windows.
    """

    bptt: int = Field(128, ge=1, description="tokens per stream per step (truncated BPTT window)")
    variable_bptt: bool = Field(False, description="AWD-LSTM's random window lengths around bptt")
    eval_streams: int = Field(8, ge=1, description="contiguous streams validation/test text is cut into")


@dataclass(frozen=True)
class BatchSettings:
    """A data section's batch settings, whatever its class: what the layout, the plans and
    the evaluation batches read, so that none of them asks which section class it holds."""

    batch_size: int
    global_batch_size: int | None
    max_tokens: int | None = None  # SequenceData: a padded-token budget per micro-batch
    bucketing: bool = False  # SequenceData: similar lengths per batch
    bucket_pool: int = 1
    bptt: int | None = None  # StreamData: windows of contiguous streams instead of samples
    variable_bptt: bool = False


def batch_settings(data: DataBase) -> BatchSettings:
    """How a job's data section cuts batches: the one place the loop, the layout and the
    bench read it (a task's section inherits `SequenceData`, `StreamData` or plain `DataBase`)."""
    sequence = data if isinstance(data, SequenceData) else None
    stream = data if isinstance(data, StreamData) else None
    return BatchSettings(
        batch_size=data.batch_size, global_batch_size=data.global_batch_size,
        max_tokens=sequence.max_tokens if sequence else None, bucketing=bool(sequence and sequence.bucketing),
        bucket_pool=sequence.bucket_pool if sequence else 1, bptt=stream.bptt if stream else None,
        variable_bptt=bool(stream and stream.variable_bptt))
