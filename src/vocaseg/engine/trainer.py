"""The training loop every vocaseg method uses (TagCLIP/ZegCLIP, GKC, ZeroSeg).

One optimiser step = ``optim.accumulate`` micro-batches per process: the step's target count is
summed over them and all processes first (``batch["num_targets"]``, see
``SegmentationModel.count_targets``), then each micro-batch moves to the device and runs
``forward_train`` under autocast (bf16/fp16 on GPU, fp32 on CPU) and ``loss`` in fp32; its loss
is divided by the number of micro-batches and back-propagated (DDP gradient sync on the last one
only), gradients are unscaled (fp16), clipped (optional, full-model L2) and AdamW steps with the
scheduled lr.

Runs resume exactly: checkpoints hold the model's own weights (not the frozen CLIP, which is
rebuilt from ``run.clip_weights``), optimiser, grad scaler, step, data position (epoch and
micro-batch index) and every process's RNG states; augmentation randomness is keyed by (seed,
epoch, sample index). Rank 0 alone writes checkpoints, logs and the final model folder.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vocaseg import __version__
from vocaseg import dist as D
from vocaseg.config import to_dict
from vocaseg.data.pipelines import PipelineContext, TrainData, get_pipeline
from vocaseg.engine import checkpoint as ckpt
from vocaseg.engine.distributed import ShardedSampler, global_target_count, init_distributed
from vocaseg.engine.guards import (
    NonFiniteLoss,
    check_device,
    check_optimizer_state,
    config_hints,
    raise_any,
    worker_errors,
    write_error,
)
from vocaseg.engine.interrupt import TrainingInterrupted, ignore_stop_signals, stop_on_signals
from vocaseg.engine.logging import TrainLogger
from vocaseg.engine.optim import build_optimizer, build_schedule
from vocaseg.engine.resume import (
    CONFIG_CHANGES,
    blocking,
    check_config,
    check_dataset,
    describe,
    read_resume_checkpoint,
    record_changes,
    resume_checkpoint,
)
from vocaseg.engine.train_config import TrainConfig
from vocaseg.errors import CheckpointError, ConfigError, VocasegWarning
from vocaseg.hashing import tensors_sha256
from vocaseg.io import write_json
from vocaseg.models.base import SegmentationModel
from vocaseg.models.folder import save_model
from vocaseg.models.registry import create_model, get_entry
from vocaseg.models.towers import RANDOM, ClipSource
from vocaseg.models.weights import LoadReport, load_into, read_state

CHECKPOINTS = "checkpoints"
FINAL = "final"


def build_model(cfg: TrainConfig, pretrained: bool | str | None = None) -> SegmentationModel:
    """The method of ``cfg.model`` built for training, on the CLIP of ``run.clip_weights``
    (``pretrained`` overrides it; ``False`` gives random weights, e.g. to print the structure)."""
    entry = get_entry(cfg.method)
    if not entry.trained:
        raise ConfigError(
            f"{cfg.method} is training-free: there is nothing to train; run it with "
            f"'vocaseg segment --model {cfg.method}' or 'vocaseg eval --model {cfg.method}'"
        )
    if pretrained is None:
        weights = cfg.run.clip_weights
        pretrained = True if weights is None else (False if weights == RANDOM else weights)
    return create_model(cfg.method, cfg.model_options, pretrained=pretrained, training=True)


def load_initial_weights(model: SegmentationModel, cfg: TrainConfig) -> tuple[LoadReport, dict]:
    """``run.init`` through the weights door; returns the load report and the source's record."""
    source = cfg.run.init
    state, record = read_state(source)
    report = load_into(
        model,
        state,
        what=f"run.init {source}",
        required=list(model.saved_state_dict()),
        allow_missing=cfg.run.init_allow_missing,
        ignore=cfg.run.init_ignore,
    )
    return report, {**record, "source": str(source)}


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def describe_model(model: nn.Module) -> str:
    """Module tree, a per-child parameter table and the total / trainable counts."""
    lines = [repr(model), "", f"{'module':<40} {'params':>14} {'trainable':>14}"]
    for name, child in model.named_children():
        total, trainable = parameter_counts(child)
        lines.append(f"{name:<40} {total:>14,} {trainable:>14,}")
    total, trainable = parameter_counts(model)
    lines.append(f"{'total':<40} {total:>14,} {trainable:>14,}")
    return "\n".join(lines)


class _TrainStep(nn.Module):
    """``forward(batch) -> losses``: what DDP wraps, so gradient sync covers the whole loss.

    Only ``forward_train`` runs under ``autocast``; the loss runs in fp32 outside it.
    """

    def __init__(self, model: SegmentationModel, autocast: Any) -> None:
        super().__init__()
        self.model = model
        self.autocast = autocast

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with self.autocast():
            outputs = self.model.forward_train(batch)
        return self.model.loss(batch, outputs)


class _EpochSamples(torch.utils.data.Dataset):
    """Pipeline samples of one epoch, each drawn with an RNG keyed by (seed, epoch, index)."""

    def __init__(self, data: TrainData, seed: int, epoch: int) -> None:
        self.source, self.seed, self.epoch = data.source, seed, epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.source.sample(index, rng)


def to_device(value: Any, device: torch.device) -> Any:
    """Move tensors in nested dicts / lists / tuples to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


class Trainer:
    """Builds everything from a :class:`TrainConfig` and runs it: ``Trainer(cfg).train()``.

    ``resume``: ``None`` (start fresh; refuses an output folder that has checkpoints), ``"auto"``
    (the newest checkpoint in the output folder; a fresh start, said in one line, when there is
    none) or a checkpoint path. A checkpoint written with another config is refused (the keys
    listed) unless ``allow_config_change`` (see :mod:`vocaseg.engine.resume`). Everything a user
    can get wrong (device, output folder, checkpoint, config, datasets) fails here, before the
    model is built where possible, and always before training starts.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        output: str | Path | None = None,
        resume: str | None = None,
        allow_config_change: bool = False,
    ) -> None:
        self.cfg = cfg
        self.output = Path(output or cfg.run.output)
        check_device(cfg.run.device)
        if int(os.environ.get("RANK", "0")) == 0:
            ckpt.check_run_folder(self.output)
        self.resumed_from = resume_checkpoint(self.output / CHECKPOINTS, resume)
        self.resume_note = None
        if resume == "auto" and self.resumed_from is None:
            self.resume_note = (
                f"--resume auto: no checkpoint in {self.output / CHECKPOINTS}; starting from "
                "scratch"
            )
        state = None
        self.config_changes: dict[str, tuple[Any, Any]] = {}
        self.start_config: dict[str, Any] | None = None  # the checkpoint's config
        if self.resumed_from is not None:
            state = read_resume_checkpoint(self.resumed_from, resume, cfg.method)
            self.start_config = state.get("config")
            self.config_changes = check_config(
                state.get("config") or {}, cfg, self.resumed_from, allow_config_change
            )
        self.dist, self.device = init_distributed(cfg.run.device)
        self.precision = self._precision()
        pipeline = get_pipeline(cfg.data.pipeline or get_entry(cfg.method).pipeline)
        context = PipelineContext(self.dist, self.device)
        if pipeline.generate is not None:  # generated data first: then every dataset is checked
            with config_hints("data.root"):
                pipeline.generate(cfg, context)
            D.barrier()
        self.eval_dataset = self._eval_dataset() if cfg.eval.every else None
        torch.manual_seed(cfg.run.seed)  # identical initial weights on every process
        self.model = build_model(cfg).to(self.device)
        init_record = None
        if cfg.run.init is not None:
            report, init_record = load_initial_weights(self.model, cfg)
            if self.dist.is_main:
                print(f"run.init {cfg.run.init}: {report.summary()}")
        with config_hints("data.root"):
            if pipeline.prepare is not None:
                pipeline.prepare(cfg, self.model, context)
                D.barrier()
            self.data: TrainData = pipeline.build(cfg, self.model, context)
        self.model.prepare_training(replace(self.data.spec, init=init_record))
        self.model.train()

        per_epoch = len(self.data.source) // (cfg.data.batch_size * self.dist.world_size)
        self.steps_per_epoch = per_epoch // cfg.optim.accumulate
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"the training set has {len(self.data.source)} samples, fewer than one global "
                f"batch ({cfg.data.batch_size} × {cfg.optim.accumulate} accumulation × "
                f"{self.dist.world_size} processes); lower data.batch_size or optim.accumulate"
            )
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.schedule = build_schedule(cfg.schedule, cfg.optim.lr, self.steps_per_epoch)
        self.total_steps = self.schedule.total
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.sampler = ShardedSampler(
            len(self.data.source),
            self.dist,
            seed=cfg.run.seed,
            shuffle=cfg.data.shuffle,
            drop_last=cfg.data.drop_last,
        )
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # micro-batches of the current epoch already consumed
        self.skipped = 0  # optimiser steps skipped for a non-finite loss
        self.last_loss = 0.0  # of the newest step on this process
        self.saved_step: int | None = None  # step of the newest checkpoint this run wrote or read
        torch.manual_seed(cfg.run.seed + 1000 * self.dist.rank)  # per-process training RNG
        if state is not None:
            self._load_state(state, allow_config_change)
        step = _TrainStep(self.model, self._autocast)
        if self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module: nn.Module = nn.parallel.DistributedDataParallel(
                step, device_ids=device_ids
            )
        else:
            self.step_module = step

    # ----------------------------------------------------------------------------------- set-up

    def _precision(self) -> str:
        wanted = self.cfg.run.precision
        if self.device.type != "cuda":
            if wanted in ("bf16", "fp16"):
                raise ConfigError(
                    f"run.precision={wanted} needs a GPU; use fp32 or auto on the CPU"
                )
            return "fp32"
        if wanted == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return wanted

    def _eval_dataset(self) -> Any:
        """The periodic evaluation's dataset, found before training starts."""
        from vocaseg.data import load_dataset

        cfg = self.cfg
        own = cfg.eval.root is not None or cfg.eval.dataset is not None
        with config_hints("eval.root" if own else "data.root (or eval.root)"):
            return load_dataset(
                cfg.eval.dataset or cfg.data.dataset,
                root=cfg.eval.root or cfg.data.root,
                split=cfg.eval.split,
            )

    def _load_state(self, state: dict[str, Any], allow_config_change: bool) -> None:
        """Model, optimiser, scaler, position and RNG of the checkpoint ``resumed_from``."""
        path = self.resumed_from
        changed = blocking(self.config_changes)
        hint = f" (the config changed: {describe(changed)})" if changed else ""
        try:
            load_into(
                self.model,
                state["model"],
                what=str(path),
                required=list(self.model.saved_state_dict(include_frozen=self._saves_frozen())),
            )
        except CheckpointError as err:
            raise CheckpointError(f"{err}{hint}") from None
        self.config_changes.update(
            check_dataset(state.get("dataset") or {}, self.data.record, path, allow_config_change)
        )
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            check_optimizer_state(self.optimizer)
        except (ValueError, KeyError) as err:
            raise CheckpointError(
                f"{path}: optimiser state does not fit this config ({err}); the parameter groups "
                f"changed (optim.lr_mult / no_decay){hint}; resume with the original config"
            ) from None
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.skipped = int(state.get("skipped_nonfinite", 0))
        self.saved_step = self.step
        rngs = state["rng"]
        if len(rngs) != self.dist.world_size:
            raise CheckpointError(
                f"{path} was written by {len(rngs)} processes, this run has "
                f"{self.dist.world_size}; exact resumption needs the same number"
            )
        ckpt.set_rng_state(rngs[self.dist.rank])

    # ------------------------------------------------------------------------------------- loop

    def _micro_batches(self) -> Iterator[dict[str, Any]]:
        """Micro-batches from the current data position on, epoch after epoch."""
        cfg = self.cfg.data
        per_epoch = self.steps_per_epoch * self.cfg.optim.accumulate
        while True:
            self.sampler.set_position(self.epoch, self.batch_in_epoch * cfg.batch_size)
            loader = torch.utils.data.DataLoader(
                _EpochSamples(self.data, self.cfg.run.seed, self.epoch),
                batch_size=cfg.batch_size,
                sampler=self.sampler,
                num_workers=cfg.num_workers,
                collate_fn=self.data.collate,
                pin_memory=self.device.type == "cuda",
                drop_last=True,
                # Worker seeds from a private generator: the global torch RNG stays untouched.
                generator=torch.Generator().manual_seed(self.cfg.run.seed + self.epoch),
                worker_init_fn=ignore_stop_signals if cfg.num_workers else None,
            )
            with worker_errors():
                for batch in loader:
                    if self.batch_in_epoch >= per_epoch:
                        break
                    self.batch_in_epoch += 1
                    yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process: every process gets the same answer."""
        if not self.dist.enabled:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        return bool(D.all_reduce_sum(value).item() > 0)

    def _optimizer_step(self, micro: list[dict[str, Any]]) -> dict[str, float] | None:
        """One optimiser step over ``micro`` batches (still on the CPU: each moves to the device
        only when it runs); returns the mean loss terms, or ``None`` when the loss was NaN/inf
        on any process (nothing updated, gradients dropped)."""
        self.schedule.apply(self.optimizer, self.step)
        self.model.before_train_step(self.step, self.total_steps)
        counts = [self.model.count_targets(b) for b in micro]
        if counts[0] is not None:
            normaliser = global_target_count(counts, self.dist, self.device)
            for batch in micro:
                batch["num_targets"] = normaliser
        sums: dict[str, torch.Tensor] = {}
        for index, batch in enumerate(micro):
            last = index == len(micro) - 1
            # DDP all-reduces gradients on the last micro-batch only.
            sync = (
                self.step_module.no_sync()
                if self.dist.enabled and not last
                else contextlib.nullcontext()
            )
            with sync:
                losses = self.step_module(to_device(batch, self.device))
                loss = losses["loss"].float() / len(micro)
            self.scaler.scale(loss).backward()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float() / len(micro)
        self.last_loss = sums["loss"].item()
        # fp16: the grad scaler skips non-finite steps itself while it calibrates the scale
        if self._any(not math.isfinite(self.last_loss) and self.precision != "fp16"):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if self.cfg.optim.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in self.model.parameters() if p.requires_grad]
            sums["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return {key: float(value) for key, value in sums.items()}

    def train(self) -> Path:
        """Run to ``total_steps``; returns the final model folder (``<output>/final``).

        SIGINT/SIGTERM stop after the step in flight with a checkpoint of it
        (:class:`TrainingInterrupted`); a NaN/inf loss skips the step while
        ``optim.skip_nonfinite`` allows, else stops with the last good step saved
        (:class:`NonFiniteLoss`). A failed checkpoint write stops every process with one line.
        """
        cfg = self.cfg
        if self.dist.is_main:
            self._record_config()
        logger = TrainLogger(
            self.output,
            self.total_steps,
            start_step=self.step,
            tensorboard=cfg.logging.tensorboard,
            progress=cfg.logging.progress,
            enabled=self.dist.is_main,
        )
        if self.resume_note is not None:
            logger.message(self.resume_note)
        if self.resumed_from is not None:
            logger.message(f"resumed from {self.resumed_from} at step {self.step}")
        if self.config_changes:
            logger.message(f"config changed on resume: {describe(self.config_changes)}")
        micro_batches = self._micro_batches()
        try:
            with stop_on_signals(announce=self.dist.is_main) as stop:
                while self.step < self.total_steps:
                    self._train_step(micro_batches, logger)
                    if self.step < self.total_steps and self._any(stop.requested):
                        self._interrupt(stop.signal)
        finally:
            micro_batches.close()  # DataLoader workers end here, also after an error
            logger.close()
        self.check_replicas()
        final = self.output / FINAL
        if self.dist.is_main:
            training = {"split": self.data.split, "dataset": self.data.record, "steps": self.step}
            error = write_error(
                lambda: save_model(self.model, final, overwrite=True, training=training),
                f"the final model {final}",
                f"checkpoint {ckpt.checkpoint_path(self.output / CHECKPOINTS, self.step)} holds "
                "the trained weights; free space and run the same command with --resume auto to "
                "write it",
            )
        else:
            error = None
        raise_any(D.all_gather_objects(error))
        return final

    def _train_step(self, micro_batches: Iterator[dict[str, Any]], logger: TrainLogger) -> None:
        """Fetch, step, log, evaluate and checkpoint once."""
        cfg = self.cfg
        before = self._position()
        tic = time.perf_counter()
        micro = [next(micro_batches) for _ in range(cfg.optim.accumulate)]
        values = self._optimizer_step(micro)
        if values is None:
            self._nonfinite(before, logger)
            return
        self.step += 1
        logger.step(values["loss"], 1.0 / max(time.perf_counter() - tic, 1e-9))
        if self.step % cfg.logging.every == 0 or self.step == self.total_steps:
            values["lr"] = self.optimizer.param_groups[0]["lr"]
            values["epoch"] = self.epoch + self.batch_in_epoch / (
                self.steps_per_epoch * cfg.optim.accumulate
            )
            logger.log(self.step, values)
        if cfg.eval.every and self.step % cfg.eval.every == 0:
            logger.log(self.step, self.evaluate())
        if self.step % cfg.checkpoint.every == 0 or self.step == self.total_steps:
            self.save_checkpoint()

    def _position(self) -> tuple[int, int, list[dict[str, Any]]]:
        """Data position and RNG states between steps (to go back to if a step is abandoned)."""
        return self.epoch, self.batch_in_epoch, ckpt.rng_state()

    def _nonfinite(self, before: tuple[int, int, Any], logger: TrainLogger) -> None:
        """A step whose loss was NaN/inf: skip it while allowed, else save the state before it
        (the last good step) and stop."""
        allowed = self.cfg.optim.skip_nonfinite
        value = self.last_loss
        where = f"loss is {value} at step {self.step + 1}"
        if math.isfinite(value):  # NaN/inf on another process only
            where = f"loss is not finite on another process at step {self.step + 1}"
        if self.skipped < allowed:
            self.skipped += 1
            self.step += 1
            logger.step(float("nan"), 0.0)
            logger.message(
                f"warning: {where}; step skipped ({self.skipped} of "
                f"{allowed} allowed by optim.skip_nonfinite)"
            )
            logger.log(self.step, {"skipped_nonfinite": float(self.skipped)})
            return
        self.epoch, self.batch_in_epoch, rng = before
        ckpt.set_rng_state(rng)
        saved = self._checkpoint_once()
        kept = f"saved the last good step to {saved}" if saved else "nothing trained yet"
        if allowed:
            where += f" after {self.skipped} skipped (optim.skip_nonfinite={allowed})"
        raise NonFiniteLoss(
            f"{where}; {kept}; lower optim.lr or set optim.grad_clip (resume with "
            "--allow-config-change), or skip such steps with --set optim.skip_nonfinite=N, "
            "then continue with --resume auto"
        )

    def _interrupt(self, signum: int | None) -> None:
        """Save the step just completed and stop (every process gets here at the same step)."""
        name = signal.Signals(signum).name if signum is not None else "a signal to another process"
        saved = self._checkpoint_once()
        code = 128 + (signum if signum is not None else signal.SIGINT)
        raise TrainingInterrupted(name, code, self.step, saved)

    def _checkpoint_once(self) -> Path | None:
        """A checkpoint of the current step unless one was written already (``None`` at step 0)."""
        if self.step == 0:
            return None
        if self.saved_step != self.step:
            self.save_checkpoint()
        return ckpt.checkpoint_path(self.output / CHECKPOINTS, self.step)

    def _record_config(self) -> None:
        """``train_config.json`` once per run (the config it started with); on a resume with
        changes, one line in ``config_changes.jsonl`` instead."""
        record = self.output / "train_config.json"
        if self.resumed_from is None or not record.is_file():
            original = to_dict(self.cfg)
            if self.resumed_from is not None:  # resumed into a new folder: the run's own start
                original = self.start_config or original
            failure = write_error(lambda: write_json(record, original), str(record))
            if failure:
                warnings.warn(failure, VocasegWarning, stacklevel=2)
        if self.config_changes:
            path = self.output / CONFIG_CHANGES
            write = partial(record_changes, self.output, self.step, self.resumed_from)
            failure = write_error(lambda: write(self.config_changes), str(path))
            if failure:
                warnings.warn(failure, VocasegWarning, stacklevel=2)

    # ----------------------------------------------------------------------- checkpoints / eval

    def _saves_frozen(self) -> bool:
        """Random or in-memory CLIP weights cannot be rebuilt from a reference: save them."""
        record = self.model.clip_source
        return record is not None and not ClipSource.from_record(record).is_reference

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything a resumed run needs (collective: every process contributes its RNG)."""
        rngs = D.all_gather_objects(ckpt.rng_state())
        vocabulary = self.data.spec.vocabulary
        weights = self.model.saved_state_dict(include_frozen=self._saves_frozen())
        return {
            "method": self.cfg.method,
            "config": to_dict(self.cfg),
            "model_config": self.model.config_dict(),
            "clip": self.model.clip_source,
            "vocabulary": None
            if vocabulary is None
            else {
                "classes": [list(names) for names in vocabulary.classes],
                "seen": None if vocabulary.seen is None else list(vocabulary.seen),
            },
            "split": self.data.split,
            "dataset": self.data.record,
            "vocaseg_version": __version__,
            "git_commit": ckpt.git_commit(),
            "world_size": self.dist.world_size,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "skipped_nonfinite": self.skipped,
            "model": {k: v.detach().cpu() for k, v in weights.items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": rngs,
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/ckpt_<step>.pt`` on rank 0 and keep the newest N; a failed write
        stops every process with the same one-line error (the previous checkpoint stays)."""
        state = self.checkpoint_state()
        folder = self.output / CHECKPOINTS
        path = ckpt.checkpoint_path(folder, self.step)
        error = None
        if self.dist.is_main:
            error = write_error(lambda: ckpt.save_checkpoint(path, state), str(path))
            if error is None:
                keep = self.cfg.checkpoint
                error = write_error(
                    lambda: ckpt.prune_checkpoints(folder, keep.keep_last, keep.keep),
                    f"(pruning) {folder}",
                )
        raise_any(D.all_gather_objects(error))  # also the barrier after the write
        self.saved_step = self.step
        return path if self.dist.is_main else None

    def check_replicas(self) -> None:
        """Raise if the processes' weights differ (they must stay bit-identical under DDP)."""
        if not self.dist.enabled:
            return
        digest = tensors_sha256(self.model.state_dict())
        digests = D.all_gather_objects(digest)
        if len(set(digests)) != 1:
            raise RuntimeError(f"model weights differ between processes: {digests}")
        if self.dist.is_main:
            print(f"weights identical on all {self.dist.world_size} processes ({digests[0][:12]})")

    def evaluate(self) -> dict[str, float]:
        """Evaluate on ``eval.dataset`` (default: the training dataset's ``eval.split``).

        The RNG states are restored afterwards, so evaluating (or not) never changes training.
        """
        from vocaseg.engine.evaluator import evaluate

        cfg = self.cfg
        dataset = self.eval_dataset if self.eval_dataset is not None else self._eval_dataset()
        trained = self.data.spec.vocabulary
        seen = trained.seen if trained is not None else None
        rng = ckpt.rng_state()
        self.model.eval()
        try:
            result = evaluate(
                self.model,
                dataset,
                dataset.classes,
                device=self.device,
                limit=cfg.eval.max_images,
                seen=seen,
                progress=False,
                **cfg.eval.options,
            )
        finally:
            self.model.train()
            ckpt.set_rng_state(rng)
        return {f"eval/{key}": float(value) for key, value in result.summary.items()}
