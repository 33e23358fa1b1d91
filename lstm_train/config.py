"""Job specs: YAML files validated strictly, with dotted overrides from the command line.

A job file names a `task` (a built-in one of `tasks.TASKS`: classify, forecast, caption,
text_classify, tag, translate, language_model, sequence; or one of another package, see
`tasks/registry.py`); the task's registration supplies the schema of the `data:` and
`model:` sections, the rest is shared.  Every error
names the file, the dotted key, the bad value and what is allowed, because a
typo found on the login node costs seconds and one found on the cluster an hour.
"""

from __future__ import annotations

import copy
import difflib
import os
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, PrivateAttr, ValidationError, create_model, field_validator

from . import runfiles, runnames, selection, yamlsafe
from .schema import ConfigError, DataBase, ModelBase, Section, default_data_root
from .sweeps import HalvingConfig, SweepConfig, point_label, point_overrides, points
from .tasks import get_sections

__all__ = ["ConfigError", "DataBase", "JobBase", "ModelBase", "Section", "default_data_root", "load_job", "validate_job"]


class OptimConfig(Section):
    name: Literal["adam", "adamw", "sgd", "rmsprop"] = Field("adam", description="the torch.optim optimizer")
    lr: float = Field(0.01, gt=0, description="learning rate (the peak one under a scheduler)")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (adamw: decoupled weight decay)")
    momentum: float = Field(0.0, ge=0, description="for sgd and rmsprop")
    betas: tuple[float, float] = Field((0.9, 0.999), description="for adam and adamw")
    scheduler: Literal["none", "cosine", "onecycle", "step"] = Field(
        "none", description="learning-rate schedule over the run's steps (or train.max_seconds' time)")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 to optim.lr over this many steps")
    step_size_epochs: int = Field(1, ge=1, description="for scheduler=step")
    gamma: float = Field(0.1, gt=0, description="for scheduler=step")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradients' global norm to this (None: no clipping)")


class EarlyStoppingConfig(Section):
    patience: int | None = Field(
        None, ge=1, description="stop after this many evaluations without a better validation metric (train.select; "
        "None: never). Needs validation data: a job without it is refused"
    )
    min_delta: float = Field(
        0.0, ge=0, description="an evaluation counts as an improvement for patience (and NT-ASGD's switch) only when "
        "it beats the last improvement by more than this, in the selected metric's units; the best checkpoint "
        "follows any improvement")


class SelectConfig(Section):
    """Which validation metric picks the best weights (checkpoints/best/), counts for early stopping
    and NT-ASGD, and which way is better.  Ties are broken by a fixed rule (`selection`): the lower
    validation loss wins, and at equal loss the later step."""

    metric: str | None = Field(
        None, description="a validation metric the task reports, without its val_ prefix (loss, accuracy, macro_f1, "
        "entity_f1, bleu, mase, r2...; `lstm-train config JOB --explain train.select.metric` lists this job's); "
        "None: the task's primary metric")
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="which way is better: min or max; auto: the task's own direction for that metric "
        "(losses and errors: min; accuracies, F1, BLEU, R2: max)")
    keep_best: int = Field(
        1, ge=1, description="keep the weights of the k best evaluations as checkpoints/top/step-N/ (beside "
        "checkpoints/best/, the best one); 1: best/ alone")


class TrainConfig(Section):
    epochs: int = Field(1, ge=1, description="passes over the training data (train.max_steps / max_seconds may end it sooner)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    max_seconds: float | None = Field(
        None, gt=0, description="end the run (validated, tested, as finished) within this much training time (all "
        "parts of the run, evaluations included): at the last step that leaves room for the next one and the final "
        "validation")
    seed: int = Field(1, description="seeds the initial weights, the batch order and every random draw of the run")
    output_dir: str | None = Field(None, description="default: runs/<job name>/<run id>")
    run_id: str | None = Field(None, description="default: what the overrides change, and a hash of the job "
                               "(hidden=128,lr=0.003-3f2a9c)")

    @field_validator("run_id")
    @classmethod
    def _plain_run_id(cls, value: str | None) -> str | None:
        """A run id is a directory name under runs/<name>/: no path (`..`, `/`, absolute)."""
        return value if value is None else plain_name(value, "train.run_id")
    grad_accum_steps: int | None = Field(
        None, ge=1, description="micro-batches per optimizer step (default 1, or as data.global_batch_size needs)"
    )
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="the newest checkpoints kept (checkpoints/step-N/; "
                                  "older ones are removed once a new one is in place)")
    log_every: int = Field(50, ge=1, description="steps between logged losses")
    eval_every_epochs: int = Field(1, ge=1, description="evaluate at the end of every N-th epoch")
    eval_every_steps: int | None = Field(None, ge=1, description="evaluate every N steps instead of per epoch")
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    select: SelectConfig = SelectConfig()
    ema: float | None = Field(
        None, gt=0, lt=1, description="evaluate (validation, test, the saved best model) with an exponential moving "
        "average of the weights, updated after every step with this decay (e.g. 0.999); None: the raw weights")
    ntasgd: bool = Field(
        False, description="AWD-LSTM's NT-ASGD switch: once validation has not improved for train.nonmono "
        "evaluations, evaluate with the uniform average of the weights from that step on")
    nonmono: int = Field(5, ge=1, description="evaluations without improvement that start NT-ASGD's average")

    @field_validator("ntasgd")
    @classmethod
    def _one_average(cls, value: bool, info: Any) -> bool:
        """One averaged model is evaluated: an EMA and NT-ASGD's average at once would leave it unsaid which."""
        if value and info.data.get("ema") is not None:
            raise ValueError("train.ntasgd and train.ema are two ways to average the weights: set one of them")
        return value
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="auto: the launcher's (accelerate launch --mixed_precision / its config file), else bf16 "
        "where the CPU/GPU runs it natively (AMX, AVX512-BF16, Ampere+), else fp32; no: exact fp32 (the tutorial bit for bit)"
    )

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        """YAML 1.1 reads a bare `no` as false; here it means the string "no"."""
        return "no" if value is False else value

    compile: bool = Field(False, description="torch.compile the model that trains (evaluation, checkpoints and "
                          "digests use the plain module); the first steps pay for the compilation")
    threads: int | None = Field(None, ge=1, description="torch threads per process (default: the launcher's "
                                "OMP_NUM_THREADS, e.g. accelerate launch --num_cpu_threads_per_process, else 1)")
    cpu: bool = Field(False, description="train on CPU even where a GPU is visible")
    init_from: str | None = Field(
        None, min_length=1, description="start from another run's weights (fine-tuning): its run directory (the "
        "weights its result was computed with: checkpoints/best/, else its newest checkpoint) or a model artifact's "
        "folder; weights only (optimizer, schedule and step start afresh), read as safetensors and JSON; shapes, task, "
        "classes and vocabulary must match. Read once, when the run starts; a resumed run continues its own checkpoint")
    halving: HalvingConfig | None = Field(None, description="set by submit on a sweep's points (sweep.early_terminate)")


class WandbConfig(Section):
    mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="auto: online when logged in to W&B, else offline (files to `wandb sync` later)")
    project: str = Field("lstm_train", description="W&B project")
    entity: str | None = Field(None, description="W&B entity (team or user; default: yours)")
    tags: list[str] = Field([], description="W&B run tags")
    dir: str | None = Field(None, description="where W&B writes its files (default: $WANDB_DIR, else the run directory)")
    shared: bool = Field(False, description="online only: every rank logs into one W&B run (W&B's shared mode) "
                         "instead of one run per rank, grouped")
    group: str | None = Field(None, description="W&B group (default: the run id; a sweep's points: the sweep id)")
    job_type: str | None = Field(None, description="W&B job type (default: train; a sweep's points: the point)")


class TrackingConfig(Section):
    wandb: WandbConfig = WandbConfig()
    tensorboard: bool = Field(False, description="also write TensorBoard event files, one folder per rank: "
                              "<run dir>/tensorboard/rank-<R> (`tensorboard --logdir runs`); opt-in")


class SlurmConfig(Section):
    partition: str | None = Field(None, description="SLURM partition (default: the cluster's)")
    nodes: int = Field(1, ge=1, description="nodes; processes = nodes x tasks_per_node")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node (0: CPU processes)")
    tasks_per_node: int | None = Field(None, ge=1, description="default: gpus_per_node, or 1 on CPU")
    cpus_per_task: int | None = Field(None, ge=1, description="CPUs per process (its torch threads)")
    mem_gb: float | None = Field(None, gt=0, description="memory per node, GB")
    time_min: int = Field(60, ge=1, description="time limit per allocation, minutes (a run goes on after a requeue)")
    account: str | None = Field(None, description="SLURM account")
    qos: str | None = Field(None, description="SLURM quality of service")
    constraint: str | None = Field(None, description="SLURM node features (--constraint)")
    array_parallelism: int = Field(16, ge=1, description="a sweep's points running at once (the job array's %N)")
    signal_delay_s: int = Field(120, ge=0, description="seconds before the time limit SLURM signals the job, which "
                                "then checkpoints and requeues")
    max_num_timeout: int = Field(3, ge=0, description="requeues after a time limit before submitit gives up")
    setup: list[str] = Field([], description="shell lines the batch script runs first (module load, a venv); no "
                             "credentials: the script is kept as a file")
    additional: dict[str, Any] = Field({}, description="further sbatch options, passed through submitit "
                                       "(slurm_additional_parameters)")

    @field_validator("setup")
    @classmethod
    def _warn_credentials(cls, lines: list[str]) -> list[str]:
        """A setup line runs in the batch script, which SLURM and submitit keep as a file:
        a credential exported there is readable wherever that file is (we redact it elsewhere)."""
        names = runfiles.credential_lines(lines)
        if names:
            import warnings

            warnings.warn(
                f"slurm.setup exports {', '.join(names)}: its value is written into the batch script "
                "(and SLURM's copy of it). Keep credentials out of job files: `wandb login` (~/.netrc), "
                "or export it in your shell before submitting (SLURM passes the environment on).",
                stacklevel=2)
        return lines


class JobBase(Section):
    """Sections shared by every task; `data` and `model` are added per task."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="the job's name: runs/<name>/ (default: the "
                      "job file's name)")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return plain_name(value, "name")
    task: str = Field("classify", description="a built-in task (classify, forecast, caption, text_classify, tag, "
                      "translate, language_model, sequence), an entry point of lstm_train.tasks, or package.module:Task")
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    slurm: SlurmConfig = SlurmConfig()
    sweep: SweepConfig | None = Field(
        None, description="a sweep over this job's keys, in W&B's sweep format (method grid or random, parameters, "
        "early_terminate): submit runs its points as one SLURM job array, compared on validation data")

    # What the command line changed in the job file (`runnames`): set by `load_job`, None for a
    # job built from a dict (a submitted job's pinned spec names its run id itself).
    _changes: dict[str, Any] | None = PrivateAttr(None)

    @property
    def label(self) -> str | None:
        """`hidden=128,lr=0.003`, `base`, or None when the job did not come from a job file."""
        return None if self._changes is None else runnames.label(self._changes)

    @property
    def run_dir(self) -> Path:
        """Where this run's config, checkpoints, metrics and result live (see `runfiles`)."""
        spec = self.to_dict()
        if spec["train"]["output_dir"]:
            return Path(spec["train"]["output_dir"])
        home = Path("runs") / self.name
        run_id = self.run_id
        legacy = home / runfiles.identity(spec)  # a run begun before readable names keeps its directory
        if not spec["train"]["run_id"] and not (home / run_id).exists() and legacy.is_dir():
            return legacy
        return home / run_id

    @property
    def run_id(self) -> str:
        """`train.run_id`, else `<label>-<hash>` (`runnames`), else the job's hash: the same job
        file and overrides give the same id wherever the run starts (here, salloc, sbatch, submit)."""
        spec = self.to_dict()
        if spec["train"]["run_id"]:
            return str(spec["train"]["run_id"])
        if self._changes is None:
            return runfiles.identity(spec)
        return runnames.readable_id(runnames.label(self._changes), spec)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------------
# Loading, overrides and error messages


def parse_value(text: str) -> Any:
    """An override's value as YAML would read it: `3` int, `0.1` float, `[1, 2]` list, `true`.

    `mixed_precision=no` stays the string "no" (see `TrainConfig`)."""
    try:
        return yamlsafe.safe_load(text)
    except yamlsafe.YamlTooLarge as e:
        raise ConfigError(f"override value {text[:60]!r}: {e}") from None
    except yaml.YAMLError:
        return text


def apply_override(spec: dict[str, Any], override: str, source: str = "command line") -> None:
    """Apply `a.b.c=value` to a nested dict in place."""
    if "=" not in override:
        raise ConfigError(f"{source}: override {override!r} is not of the form dotted.key=value (e.g. train.epochs=3)")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"{source}: override {override!r} has an empty key part")
    node = spec
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(parts[: i + 1])} is a value, not a section; cannot set {key}")
        node = child
    node[parts[-1]] = parse_value(text)


def job_schema(task: str) -> type[JobBase]:
    """The pydantic model of a whole job for one task."""
    data, model = get_sections(task)  # torch-free: validating a job imports no training code
    return create_model(  # type: ignore[call-overload]
        "".join(c if c.isalnum() else "_" for c in task).title() + "Job",
        __base__=JobBase,
        data=(data, data()),
        model=(model, model()),
    )


def _allowed_keys(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Keys allowed at a location of the schema (for 'did you mean' suggestions)."""
    model: Any = schema
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", ()) or (annotation,):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
        else:
            return []
    return list(getattr(model, "model_fields", {}))


def _describe(error: dict[str, Any], schema: type[BaseModel], source: str, spec: Any = None) -> str:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = ".".join(str(p) for p in loc)
    if hasattr(spec, "line_of"):  # a run's config.yaml, maybe someone else's: its keys and lines, never its text
        where = f"line {spec.line_of(loc) or '?'}: "
        if error["type"] == "extra_forbidden":
            return f"{source}: {where}a key this lstm_train does not know (is this a run of another version?)"
        return f"{source}: {where}{key}: not a valid value ({error['type']})"
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(schema, loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" Did you mean {'.'.join(map(str, loc[:-1] + (close[0],)))!r}?" if close else ""
        return f"{source}: unknown key {key!r}.{hint} Allowed here: {', '.join(allowed)}"
    value = error.get("input")
    message = error["msg"].removeprefix("Value error, ")
    expected = error.get("ctx", {}).get("expected")
    if expected:
        message = f"expected one of {expected}"
    return f"{source}: {key} = {value!r}: {message}"


def validate_job(spec: dict[str, Any], source: str) -> JobBase:
    """Validate a job dict; all problems are reported at once."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: a job spec is a mapping of sections, got {type(spec).__name__}")
    task = spec.get("task", "classify")
    if not isinstance(task, str):
        raise ConfigError(f"{source}: task is a {type(task).__name__}: a task's name or a package.module:Object reference")
    try:
        schema = job_schema(task)  # the task's registration: built-in, entry point or reference
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    try:
        job = schema.model_validate(spec)
    except ValidationError as e:
        lines = [_describe(err, schema, source, spec) for err in e.errors()]
        raise ConfigError("\n".join(lines)) from None
    if job.sweep is not None:
        check_sweep_keys(job.sweep.flat_parameters(), schema, source)
    selection.check_job(job, source)
    return job


def check_sweep_keys(parameters: dict[str, Any], schema: type[BaseModel], source: str) -> None:
    """Every key a sweep varies is a key of this job (`config` says so at once, not point by point)."""
    for key in parameters:
        parts = tuple(key.split("."))
        model: Any = schema
        for i, part in enumerate(parts):
            fields = getattr(model, "model_fields", None)
            if not fields or part not in fields or part == "sweep":
                allowed = [k for k in (fields or {}) if k != "sweep"]
                close = difflib.get_close_matches(part, allowed, n=1)
                hint = f" Did you mean {'.'.join(parts[:i] + (close[0],))!r}?" if close else ""
                raise ConfigError(f"{source}: sweep.parameters.{key}: {key!r} is not a job key.{hint}"
                                  + (f" Allowed here: {', '.join(allowed)}" if allowed else ""))
            annotation = fields[part].annotation
            model = next((c for c in (getattr(annotation, "__args__", ()) or (annotation,))
                          if isinstance(c, type) and issubclass(c, BaseModel)), None)


def load_job(path: str | Path, overrides: list[str] = ()) -> JobBase:
    """Read a job file (and the files its `defaults:` names, merged beneath it), apply `key=value`
    overrides and validate the result as one job."""
    path = Path(path)
    bases: list[Path] = []
    spec = compose(path, bases=bases)
    spec.setdefault("name", path.stem)
    base = copy.deepcopy(spec)
    for override in overrides:
        apply_override(spec, override)
    source = str(path) + (f" (on defaults {', '.join(map(str, bases))})" if bases else "") + \
        (f" (with overrides {' '.join(overrides)})" if overrides else "")
    job = validate_job(spec, source)
    keys = [o.split("=", 1)[0].strip() for o in overrides]
    job._changes = runnames.changes(keys, job_file_alone(base) if keys else None, job.to_dict())
    return job


MAX_DEFAULTS_DEPTH = 16  # files including files: far beyond any real chain, short of a runaway one


def read_job_file(path: Path, included_by: Path | None = None) -> dict[str, Any]:
    """One job file's mapping (YAML with the alias budget), or a ConfigError naming the file (and
    the file whose `defaults:` named it)."""
    where = f" (named in the defaults of {included_by})" if included_by else ""
    try:
        spec = yamlsafe.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: job file not found{where}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a job file{where}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML{where}: {e}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: a job spec is a mapping of sections, got {type(spec).__name__}{where}")
    return spec


def compose(path: Path, chain: tuple[Path, ...] = (), bases: list[Path] | None = None) -> dict[str, Any]:
    """The job file `path` with its `defaults: [base.yaml, ...]` beneath it: each named file
    (relative to the file naming it) composed the same way, merged in order, then this file's own
    keys on top (sections merge key by key; a value or a list replaces).  The bases' `name`s are
    dropped: a job is named by its own file.  A cycle, a missing file or a `defaults` that is not
    a list of file names is a ConfigError naming the files.  `bases` collects the files merged in."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain[chain.index(resolved):], resolved))
        raise ConfigError(f"{chain[-1]}: defaults form a cycle: {cycle}")
    if len(chain) >= MAX_DEFAULTS_DEPTH:
        raise ConfigError(f"{path}: defaults nested more than {MAX_DEFAULTS_DEPTH} files deep (from {chain[0]})")
    spec = read_job_file(path, chain[-1] if chain else None)
    named = spec.pop("defaults", None)
    if named is None:
        return spec
    if isinstance(named, str):
        named = [named]
    if not isinstance(named, list) or not all(isinstance(b, str) and b.strip() for b in named):
        raise ConfigError(f"{path}: defaults = {runfiles.shorten(named)}: a list of job files to build on "
                          "(e.g. defaults: [base.yaml]), relative to this file")
    merged: dict[str, Any] = {}
    for base in named:
        below = compose(path.parent / base, (*chain, resolved), bases)
        if bases is not None:
            bases.append(path.parent / base)
        below.pop("name", None)
        merge(merged, below)
    return merge(merged, spec)


def merge(into: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` merged into `into` in place (and returned): mappings key by key, anything else replaced."""
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


def job_file_alone(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The job file without its overrides, validated (defaults filled): what a run's label is
    measured against; None when the file is not valid alone (it needs an override)."""
    import warnings

    try:
        with warnings.catch_warnings():  # said once already, for the job with its overrides
            warnings.simplefilter("ignore")
            return validate_job(spec, "job file").to_dict()
    except ValueError:
        return None


def plain_name(value: str, key: str) -> str:
    """`value` if it is a plain file name (letters, digits, `_ . -`, and for a run id `, = +` as in a
    readable run id; not `.` or `..`), else a clear error: names become directories under runs/,
    and a path there would write outside it."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}" if key == "name" else r"[A-Za-z0-9_.,=+-]{1,128}", value) \
            or set(value) == {"."}:
        extra = "" if key == "name" else ", ',', '=', '+'"
        raise ValueError(f"{key}={runfiles.shorten(value)} is not a plain name: use 1-128 letters, digits, "
                         f"'_', '.'{extra} or '-' (no '/', no '..'); to write elsewhere set train.output_dir")
    return value


def save_job(job: JobBase, path: Path) -> None:
    """config.yaml: the resolved job, credentials redacted, written atomically."""
    runfiles.write_atomic(path, yaml.safe_dump(runfiles.redact(job.to_dict()), sort_keys=False))


def check_option(job: JobBase, key: str, value: Any, flag: str) -> Any:
    """A command-line value validated exactly as the job schema validates `key` (`--beam 0` is
    refused as `model.beam_size: 0` would be), or a ConfigError naming the flag."""
    section_name, field = key.split(".")
    section = getattr(job, section_name)
    if field not in type(section).model_fields:
        raise ConfigError(f"{flag} does not apply to a {job.task} run (its {section_name} has no {field})")
    try:
        type(section).model_validate({**section.model_dump(), field: value})
    except ValidationError as e:
        raise ConfigError(f"{flag} {runfiles.shorten(value)}: {e.errors()[0]['msg']} (as {key} in a job file)") from None
    return value


def sweep_jobs(job: JobBase, source: str) -> list[tuple[str, dict[str, Any], JobBase]]:
    """(label, params, validated job) of every point of the job's `sweep:` (`sweeps.points`):
    the job without its sweep, each point's values applied as overrides and checked.  Points
    are compared on validation data, never on the test split: a job without a validation split
    gets one (`select_on_validation`) or is refused with the reason."""
    return point_jobs(job, source, list(enumerate(points(job.sweep))))


def point_jobs(job: JobBase, source: str, numbered: list[tuple[int, dict[str, Any]]],
               say: bool = True) -> list[tuple[str, dict[str, Any], JobBase]]:
    """(label, params, validated job) of the given points (index, params) of the job's sweep: a
    grid's or random sweep's drawn ones (`sweep_jobs`), or a bayes sweep's suggestions (`say`:
    whether to say again that a validation split is made, once per sweep is enough)."""
    base = job.to_dict()
    base["sweep"] = None
    base["train"]["output_dir"] = base["train"]["run_id"] = None
    added = select_on_validation(job, source, say)
    for override in added:
        apply_override(base, override, f"{source}: sweep")
    out = []
    for i, params in numbered:
        spec = copy.deepcopy(base)
        for override in point_overrides(params):
            apply_override(spec, override, f"{source}: sweep")
        label = point_label(i, params)
        point = validate_job(spec, f"{source} (sweep point {label})")
        if job._changes is not None:  # `run --point N`: its directory says what differs, the point included
            keys = [o.split("=", 1)[0] for o in added] + list(params)
            point._changes = dict(sorted({**job._changes, **runnames.changes(keys, None, point.to_dict())}.items()))
        out.append((label, params, point))
    return out


def select_on_validation(job: JobBase, source: str, say: bool = True) -> list[str]:
    """The overrides that give a sweep's points a validation split to be compared on ([] when
    the job has one), said once; a ConfigError saying why when the task cannot split one off
    (ranking points by the test split would choose hyperparameters on the test set)."""
    plan = job.data.validation()
    if isinstance(plan, str):
        raise ConfigError(f"{source}: a sweep compares its points on validation data, and this job has none: {plan}")
    if plan and say and int(os.environ.get("RANK", "0")) == 0:
        print(f"{source}: no validation split; the sweep's points are compared on one split off the training "
              f"data ({', '.join(plan)}), never on the test split", file=sys.stderr, flush=True)
    return plan
