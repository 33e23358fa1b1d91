"""The model artifact: a run's model as W&B stores it, for using the model elsewhere.

Its files lie flat in `<run dir>/model-artifact/`: the weights and meta.json a checkpoint
directory holds (best/, or the newest step-<N>/), with the run's own files beside them, so that
`predict` takes the folder as it takes the run directory.  Apart from `checkpoint` because it is
the run's output rather than a state to resume: it holds no optimizer state, and only the end of
a run (`train.result`) writes it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import (
    BEST, CHECKPOINTS, META_FILE, MODEL_FILE, checkpoint_files, evaluated_weights, read_meta, weights_bytes,
    write_directory,
)

ARTIFACT = "model-artifact"  # in the run directory: the W&B model artifact's files, staged
_NOT_RUN_FILES = {"lock.json", "submission.json", "result.json", "config.yaml"}
_NOT_RUN_FILE_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg", ".pdf", ".tsv", ".log", ".out", ".err",
                          ".pt", ".onnx"}  # plots, tables, logs, `lstm-train export`'s files


def stage_artifact(run_dir: Path, selected: bool) -> Path:
    """The files of the run's model artifact, flat in `run_dir`/model-artifact/ (atomically):
    the weights and meta.json of best/ (`selected`: a model was chosen on validation data) or
    of the newest checkpoint, config.yaml, result.json and the run files (vocabularies,
    subword models: the task's files at the top of the run directory).  `predict` takes that
    folder, or one `wandb artifact get` downloads, as it takes the run directory.  Staged
    inside the run directory so that a copied run directory still `wandb sync`s it whole.
    No optimizer state: the artifact is for using the model, not for resuming."""
    run_dir = Path(run_dir)
    folder = run_dir / CHECKPOINTS
    source = folder / BEST if selected else checkpoint_files(folder)[0][1]
    files = {name: (source / name).read_bytes() for name in (MODEL_FILE, META_FILE)}
    meta = read_meta(source)
    if (meta.get("average") or {}).get("saved"):  # the weights the result was computed with, as the model
        files[MODEL_FILE] = weights_bytes(evaluated_weights(source, meta))
        meta["average"] = {**meta["average"], "saved": False, "in_model": True}
        files[META_FILE] = (json.dumps(meta, indent=1) + "\n").encode()
    for path in sorted(run_dir.iterdir()):
        if path.is_file() and not path.is_symlink() and not path.name.startswith(".") and (
                path.name in ("config.yaml", "result.json") or
                path.name not in _NOT_RUN_FILES and path.suffix not in _NOT_RUN_FILE_SUFFIXES and
                not path.name.endswith((".pt.json", ".onnx.json"))):
            files[path.name] = path.read_bytes()
    target = run_dir / ARTIFACT
    write_directory(target, files)
    return target
