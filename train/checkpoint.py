"""Checkpoints: written atomically, loaded with ``weights_only=True``, refused when they belong to another config.

A checkpoint is a plain dict of tensors, numbers and strings (configs are JSON strings), so that
``torch.load(weights_only=True)`` reads it; anything that needs unpickling arbitrary Python objects is
refused with a `CheckpointError`. Layout of a run folder::

    OUT/config.json              the TrainConfig and the model config
    OUT/stage1/last.pt, best.pt  last epoch (or mid-epoch save), and the kept epoch (--select: best validation
                                 AUC, or the last epoch)
    OUT/stage2/last.pt, best.pt

``epoch`` counts the completed epochs of the stage and ``best_epoch`` numbers the best one from 1 (0: none yet), as
the log and metrics.jsonl do. ``last.pt`` is also written within an epoch (``--save-every-steps``): then
``epoch_step`` holds the steps already taken in the next epoch and ``running`` its running sums (over all ranks).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hilif.pipeline import schema

log = logging.getLogger(__name__)

FORMAT = "hilif-checkpoint"
#: 2: ``best_epoch`` and the ``metrics`` row count epochs from 1 (version 1 counted them from 0; converted on load)
VERSION = 2


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here (unreadable, pickled payload, other config)."""


def stage_dir(out: str | os.PathLike, stage: int) -> Path:
    return Path(out) / f"stage{stage}"


def last_path(out: str | os.PathLike, stage: int) -> Path:
    return stage_dir(out, stage) / "last.pt"


def best_path(out: str | os.PathLike, stage: int) -> Path:
    return stage_dir(out, stage) / "best.pt"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):  # DDP
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


# --------------------------------------------------------------------------- random state


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors / numbers (weights_only-loadable)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python_version": py[0],
        "python": torch.tensor(py[1], dtype=torch.int64),
        "python_gauss": -1.0 if py[2] is None else float(py[2]),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    gauss = state["python_gauss"]
    random.setstate(
        (state["python_version"], tuple(int(v) for v in state["python"].tolist()), None if gauss == -1.0 else gauss)
    )
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- save / load


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    model_config: dict[str, Any],
    train_config: dict[str, Any],
    stage: int,
    epoch: int,
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    best_metric: float = float("nan"),
    best_epoch: int = 0,
    metrics: dict[str, Any] | None = None,
    with_rng: bool = True,
    extract: dict[str, Any] | None = None,
    epoch_step: int = 0,
    running: torch.Tensor | None = None,
    plan: dict[str, int] | None = None,
    train_model: torch.nn.Module | None = None,
) -> Path:
    """Write a checkpoint atomically: a temporary file in the same folder, fsync, then rename.

    ``epoch_step`` > 0 marks a mid-epoch checkpoint (steps taken in epoch ``epoch``), with the epoch's ``running``
    loss sums; ``plan`` records the data plan (steps per epoch, world size, ...) a resume must match.

    ``extract``: how the training shards' faces were found (:func:`extract_settings`), for hilif-eval detect.
    ``model``: the validated weights (the moving average with --ema-decay); ``train_model``: the optimiser's own
    weights, which --resume continues (last.pt of an EMA run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": json.dumps(model_config, sort_keys=True),
        "train_config": json.dumps(train_config, sort_keys=True),
        "stage": int(stage),
        "epoch": int(epoch),  # epochs completed in this stage
        "step": int(step),  # optimiser steps taken in this stage
        "best_metric": float(best_metric),
        "best_epoch": int(best_epoch),  # 1-based
        "metrics": json.dumps(metrics or {}),
        "extract": json.dumps(extract or {}, sort_keys=True),
        "epoch_step": int(epoch_step),
        "plan": json.dumps(plan or {}, sort_keys=True),
        "model": _weights(model),
    }
    if train_model is not None:
        payload["train_model"] = _weights(train_model)
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        payload["scheduler"] = scheduler.state_dict()
    if running is not None:
        payload["running"] = running.detach().cpu()
    if with_rng:
        payload["rng"] = rng_state()
    _write_atomic(payload, path)
    return path


def _write_atomic(payload: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename: a kill never leaves half a file."""
    tmp = schema.tmp_path(path)
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def extract_settings(info: schema.DatasetInfo) -> dict[str, Any]:
    """The face settings of a shard folder's extract run (dataset.json), as recorded in its checkpoints."""
    return {"face": dict(info.config.get("face") or {}), "face_size": info.face_size, "dataset": info.dataset}


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; configs come back as dicts."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such checkpoint; pass a .pt written by hilif-train (e.g. RUN/stage2/best.pt)"
        )
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is garbage or truncated
        raise CheckpointError(
            f"{path}: unreadable checkpoint (not a torch.save archive, or truncated); "
            f"use another one (e.g. the stage's best.pt)"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        what = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"global {what.group(1)}" if what else ""
        raise CheckpointError(
            f"{path}: refused - it carries a pickled Python object that weights_only loading does not allow"
            f"{' (' + what + ')' if what else ''}; only checkpoints of tensors and plain values, as hilif-train "
            f"writes, are loaded"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({str(exc).splitlines()[0]}); use another one (e.g. the stage's best.pt)"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a hilif-train checkpoint (no '{FORMAT}' marker)")
    if int(ckpt.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {ckpt['version']} is newer than this hilif ({VERSION}); upgrade hilif"
        )
    ckpt["model_config"] = json.loads(ckpt["model_config"])
    ckpt["train_config"] = json.loads(ckpt["train_config"])
    ckpt["metrics"] = json.loads(ckpt.get("metrics", "{}"))
    ckpt["plan"] = json.loads(ckpt.get("plan", "{}"))
    ckpt.setdefault("epoch_step", 0)
    ckpt["extract"] = json.loads(ckpt.get("extract", "{}"))  # {} in checkpoints written before it was recorded
    if int(ckpt.get("version", 0)) < 2:
        _epochs_from_one(ckpt)
    return ckpt


def _epochs_from_one(ckpt: dict[str, Any]) -> None:
    """A version-1 checkpoint's epoch numbers (from 0, -1 for none) counted from 1 (0 for none), as in version 2."""
    ckpt["best_epoch"] = int(ckpt.get("best_epoch", -1)) + 1
    row = ckpt["metrics"]
    for key in ("epoch", "best_epoch"):
        if isinstance(row.get(key), int):
            row[key] += 1


def config_mismatch(want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    """Names of fields whose values differ (missing on one side counts)."""
    return sorted(k for k in set(want) | set(have) if want.get(k, "<missing>") != have.get(k, "<missing>"))


def model_config_mismatch(want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    """`config_mismatch` of two HiLIFConfig dicts without the execution-only fields (`HiLIFConfig.EXECUTION_FIELDS`):
    a run or checkpoint written before one existed, or with another value, holds the same model."""
    from hilif.model.config import HiLIFConfig

    drop = HiLIFConfig.EXECUTION_FIELDS
    return config_mismatch(
        {k: v for k, v in want.items() if k not in drop}, {k: v for k, v in have.items() if k not in drop}
    )


def identity_mismatch(identity: dict[str, Any], saved_train_config: dict[str, Any]) -> list[str]:
    """Identity fields (TrainConfig.identity()) that differ from a saved TrainConfig dict. A field the saved config
    lacks (written before the field existed) counts as its default, so older runs stay resumable - except where the
    default changed what such a run computed: a self-blending run saved before ``sbi_regions`` / ``sbi_size``
    existed drew every mask from the face hull alone, on the stored crop, so it resumes only with ``--sbi-regions
    face --sbi-size crop``; a run on some methods (or none) saved before ``val_fakes`` existed chose its epochs on
    every method's val fakes, so it resumes only with ``--val-fakes all``; a run saved before ``select`` existed
    kept its best-validated epochs, so it resumes only with ``--select val``; a run saved before ``sbi_p_frequency``
    existed made every self-blended fake with a frequency change, so a demo run resumes only with
    ``--sbi-p-frequency 1``."""
    import dataclasses

    from hilif.train.config import RUNTIME_FIELDS, TrainConfig

    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(TrainConfig)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    have = {k: v for k, v in saved_train_config.items() if k not in RUNTIME_FIELDS}
    # a run saved before these fields existed trained without SBI, kept its best-validated epochs and, if it
    # self-blended, made SBI's frequency change on every fake (the field's own default is now the preset's)
    defaults.update(synth_fakes="none", select="val", sbi_p_frequency=1.0)
    if have.get("synth_fakes", "none") != "none":
        defaults.update(sbi_regions=["face"], sbi_size="crop")
    if have.get("train_methods"):  # on all methods the two choices score the same fakes
        defaults.update(val_fakes="all")
    for k in identity:
        if k not in have and k in defaults:
            have[k] = defaults[k]
    return config_mismatch(identity, have)


def check_config(
    path: str | os.PathLike,
    ckpt: dict[str, Any],
    model_config: dict[str, Any],
    train_identity: dict[str, Any] | None = None,
) -> None:
    """Refuse a checkpoint whose model config (or, when given, training identity) differs from this run's."""
    diff = model_config_mismatch(model_config, ckpt["model_config"])
    if diff:
        raise CheckpointError(
            f"{path}: written for another model config (differs in {', '.join(diff)}); "
            f"use the same --preset/options or another --out"
        )
    if train_identity is not None:
        diff = identity_mismatch(train_identity, ckpt["train_config"])
        if diff:
            raise CheckpointError(
                f"{path}: written by a run with other training options (differs in "
                f"{', '.join(diff)}); repeat the original options to resume, or use another --out"
            )
