"""The training loop: dynamic padding, length-grouped batches, a schedule sized to the budget,
early stopping on validation loss, the best weights kept, and resumable checkpoints.

    result = train_model(model, tokenizer, "train.jsonl", "validation.jsonl", cfg.train, "out/")

Why not ``Seq2SeqTrainer``: text-to-SQL inputs vary from 20 to 500 tokens, so the loop groups
examples of similar length and pads each batch only to its own longest member; the learning-rate
schedule can be sized to a wall-clock budget; examples can carry loss weights (iterative
refinement); techniques get a hook after every optimizer step (AdaLoRA, BitNet); and a checkpoint
holds everything needed to resume exactly where a killed run stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from t2sql.hardware import cpu_supports_bf16, pick_device, set_threads
from t2sql.io import atomic_open, atomic_write_json, read_jsonl
from t2sql.modeling import count_parameters
from t2sql.prompt import PromptOptions, build_sources, question_context, training_target

log = logging.getLogger(__name__)

RESULT_FILE = "train_result.json"

#: Set by :func:`request_stop` (a scheduler's SIGTERM): every training loop checkpoints and stops at its next step.
STOP = threading.Event()


class TrainingStopped(InterruptedError):
    """A run stopped on request, its checkpoint written: running it again resumes there."""


_RUNNING = 0
_RUNNING_LOCK = threading.Lock()


def request_stop() -> None:
    """Ask every training loop in this process to checkpoint and stop after its current step."""
    STOP.set()


def running_loops() -> int:
    """Training loops running in this process now (0 once all have stopped after :func:`request_stop`)."""
    return _RUNNING


@contextlib.contextmanager
def _counted():
    global _RUNNING
    with _RUNNING_LOCK:
        _RUNNING += 1
    try:
        yield
    finally:
        with _RUNNING_LOCK:
            _RUNNING -= 1
CKPT_DIR = "checkpoints"
BEST_FILE = "best_trainable.pt"


@dataclass
class TrainResult:
    """What a training run did; written to ``train_result.json``."""

    best_val_loss: float
    best_step: int
    global_step: int
    epochs_done: float
    wall_s: float
    train_tokens: int
    tokens_per_s: float
    examples_per_s: float
    peak_rss_mb: float
    trainable_params: int
    total_params: int
    stopped: str
    resumed_from_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable or fails its checksum."""


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
@dataclass
class Encoded:
    ids: list[str]
    sources: list[list[int]]
    targets: list[list[int]]

    def __len__(self) -> int:
        return len(self.ids)


def encode_file(path: str | os.PathLike[str], tokenizer, max_source_length: int, max_target_length: int,
                limit: int | None = None, prompt: PromptOptions | None = None) -> Encoded:
    """Tokenize a JSONL file of records into source and target id lists (truncated, with EOS).

    With ``prompt.question_values``, a record's ``db_path`` gives its
    context the values its question names (:func:`t2sql.prompt.question_context`).
    """
    ids, srcs, tgts = [], [], []
    pairs = []
    left_out = 0
    for i, rec in enumerate(read_jsonl(path)):
        if limit is not None and i >= limit:
            break
        context = question_context(rec["question"], rec["context"], rec.get("db_path"), prompt)
        target = training_target(rec["answer"], rec["question"], context, prompt)
        if target is None:
            left_out += 1  # the gold query reads a table or column the pruned schema does not show
            continue
        ids.append(str(rec.get("id", i)))
        pairs.append((rec["question"], context))
        tgts.append(target)
    srcs = build_sources(pairs, prompt)
    if left_out:
        log.info("%s: %d examples left out (their gold query reads a table or column the pruned schema does not show)",
                 path, left_out)
    enc_s = tokenizer(srcs, truncation=True, max_length=max_source_length)["input_ids"] if srcs else []
    enc_t = tokenizer(tgts, truncation=True, max_length=max_target_length)["input_ids"] if tgts else []
    return Encoded(ids, enc_s, enc_t)


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, max_tokens: int | None = None,
                           group_factor: int = 50) -> list[list[int]]:
    """Shuffle, then sort within mega-batches by length and cut into batches; batch order shuffled.

    With ``max_tokens``, a batch grows while ``batch_len * longest`` stays under the budget, so
    batches of short examples hold more of them.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    mega = batch_size * group_factor
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega], key=lambda i: lengths[i])
        if max_tokens is None:
            batches.extend(chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size))
            continue
        cur: list[int] = []
        longest = 0
        for i in chunk:
            new_longest = max(longest, lengths[i])
            if cur and (len(cur) + 1) * new_longest > max_tokens:
                batches.append(cur)
                cur, new_longest = [], lengths[i]
            cur.append(i)
            longest = new_longest
        if cur:
            batches.append(cur)
    rng.shuffle(batches)
    return batches


def collate(enc: Encoded, idx: list[int], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Pad a batch to its own longest source and target (labels padded with -100)."""
    s_len = max(len(enc.sources[i]) for i in idx)
    t_len = max(len(enc.targets[i]) for i in idx)
    input_ids = torch.full((len(idx), s_len), pad_id, dtype=torch.long)
    attn = torch.zeros((len(idx), s_len), dtype=torch.long)
    labels = torch.full((len(idx), t_len), -100, dtype=torch.long)
    for r, i in enumerate(idx):
        s, t = enc.sources[i], enc.targets[i]
        input_ids[r, : len(s)] = torch.tensor(s)
        attn[r, : len(s)] = 1
        labels[r, : len(t)] = torch.tensor(t)
    return {"input_ids": input_ids.to(device), "attention_mask": attn.to(device), "labels": labels.to(device)}


def seq2seq_loss(model, batch: dict[str, torch.Tensor], weights: torch.Tensor | None = None,
                 label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """Token-level cross entropy (optionally weighted per example); returns (loss, target tokens)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    logits = out.logits.float()
    labels = batch["labels"]
    tok_loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none",
                               label_smoothing=label_smoothing)
    mask = (labels != -100).float()
    n_tokens = int(mask.sum().item())
    if weights is not None:
        mask = mask * weights[:, None]
    loss = (tok_loss * mask).sum() / max(mask.sum().item(), 1e-8)
    return loss, n_tokens


# --------------------------------------------------------------------------------------------
# Schedule, precision
# --------------------------------------------------------------------------------------------
def param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only (matrices first, as checkpoints store them)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0})
            if g["params"]]


def lr_factor(progress: float, schedule: str, warmup: float) -> float:
    """Multiplier of the peak learning rate at ``progress`` in [0, 1] of the run."""
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 0.01)
    if schedule == "constant":
        return 1.0
    rest = min(max((progress - warmup) / max(1.0 - warmup, 1e-8), 0.0), 1.0)
    if schedule == "linear":
        return max(1.0 - rest, 0.0)
    return 0.5 * (1.0 + math.cos(math.pi * rest))


def autocast_context(precision: str, device: torch.device):
    """bf16 autocast on CPUs that support it, fp16/bf16 on GPU, else nothing."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_supports_bf16() else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise CheckpointError(f"checkpoint has parameters the model lacks: {missing[:3]}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))


def save_checked(obj: Any, path: Path) -> None:
    """torch.save atomically, with a SHA-256 sidecar to detect corruption."""
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with atomic_open(path.with_suffix(path.suffix + ".sha256")) as fh:
        fh.write(digest)


def load_checked(path: Path) -> Any:
    """Load a file saved by :func:`save_checked`.

    Raises:
        CheckpointError: missing checksum, checksum mismatch, or unreadable file.
    """
    side = path.with_suffix(path.suffix + ".sha256")
    if not side.is_file():
        raise CheckpointError(f"{path}: no checksum file")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != side.read_text().strip():
        raise CheckpointError(f"{path}: checksum mismatch (file corrupted or partly written)")
    try:
        import io

        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad checkpoint
        raise CheckpointError(f"{path}: unreadable: {exc}") from exc


def latest_checkpoint(ckpt_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The newest checkpoint that passes its checksum, and messages about any that were skipped."""
    skipped: list[str] = []
    if not ckpt_dir.is_dir():
        return None, skipped
    candidates = sorted(ckpt_dir.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]), reverse=True)
    for path in candidates:
        try:
            return load_checked(path), skipped
        except CheckpointError as exc:
            msg = f"skipping corrupted checkpoint: {exc}"
            log.warning(msg)
            skipped.append(msg)
    return None, skipped


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def validation_loss(model, enc: Encoded, batch_size: int, pad_id: int, device: torch.device, precision: str) -> float:
    """Mean token cross entropy over the validation set."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    batches = length_grouped_batches([len(s) for s in enc.sources], batch_size, seed=0)
    for idx in batches:
        batch = collate(enc, idx, pad_id, device)
        with autocast_context(precision, device):
            loss, n = seq2seq_loss(model, batch)
        total += loss.item() * n
        count += n
    if was_training:
        model.train()
    return total / max(count, 1)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
def train_model(model, tokenizer, train_path: str | os.PathLike[str], val_path: str | os.PathLike[str], cfg,
                out_dir: str | os.PathLike[str], *, technique=None, technique_cfg=None,
                example_weights: dict[str, float] | None = None, progress: bool = True,
                val_metrics_fn: Callable[[Any], dict[str, float]] | None = None,
                stop_after_steps: int | None = None, prompt: PromptOptions | None = None) -> TrainResult:
    """Train ``model`` in place and leave it holding the best validation weights.

    Args:
        model: a seq2seq model (possibly wrapped by a technique's ``prepare``).
        tokenizer: its tokenizer.
        train_path, val_path: JSONL record files.
        cfg: a ``TrainConfig``.
        out_dir: where checkpoints, the best weights and ``train_result.json`` go. A finished run
            there is returned as is; an unfinished one resumes from its newest valid checkpoint.
        technique: the technique module; its ``on_optimizer_step`` runs after every optimizer step.
        example_weights: loss weight per record id (default 1.0).
        val_metrics_fn: called with the model at every evaluation; its dict joins the history
            (e.g. validation execution accuracy).
        stop_after_steps: end the run early at this global step without marking it finished
            (used to test resumption). :func:`request_stop` does the same at the next step.
        prompt: input/target format options.

    Returns:
        The :class:`TrainResult`.
    """
    with _counted():
        return _train_model(model, tokenizer, train_path, val_path, cfg, out_dir, technique=technique,
                            technique_cfg=technique_cfg, progress=progress, example_weights=example_weights,
                            val_metrics_fn=val_metrics_fn, stop_after_steps=stop_after_steps, prompt=prompt)


def _train_model(model, tokenizer, train_path: str | os.PathLike[str], val_path: str | os.PathLike[str], cfg,
                out_dir: str | os.PathLike[str], *, technique=None, technique_cfg=None,
                example_weights: dict[str, float] | None = None, progress: bool = True,
                val_metrics_fn: Callable[[Any], dict[str, float]] | None = None,
                stop_after_steps: int | None = None, prompt: PromptOptions | None = None) -> TrainResult:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = out / RESULT_FILE
    if done.is_file() and (out / BEST_FILE).is_file():
        result = TrainResult(**json.loads(done.read_text()))
        load_trainable_state(model, load_checked(out / BEST_FILE))
        return result
    if STOP.is_set():
        raise TrainingStopped(f"{out}: not started, a stop was requested")

    set_threads(cfg.num_threads)
    device = pick_device(cfg.device)
    model.to(device)
    model.train()
    torch.manual_seed(cfg.seed)
    pad_id = tokenizer.pad_token_id

    train = encode_file(train_path, tokenizer, cfg.max_source_length, cfg.max_target_length, prompt=prompt)
    val = encode_file(val_path, tokenizer, cfg.max_source_length, cfg.max_target_length, limit=cfg.val_max_examples,
                      prompt=prompt)
    if len(train) == 0:
        raise ValueError(f"{train_path}: no training examples")
    weights = None
    if example_weights:
        weights = torch.tensor([float(example_weights.get(i, 1.0)) for i in train.ids])
    lengths = [len(s) + len(t) for s, t in zip(train.sources, train.targets)]
    steps_per_epoch = len(length_grouped_batches(lengths, cfg.batch_size, cfg.seed, cfg.max_tokens_per_batch))
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    budget_s = cfg.max_minutes * 60.0 if cfg.max_minutes else None
    eval_every = cfg.eval_every_steps or max(1, steps_per_epoch)
    if budget_s and not cfg.eval_every_steps:
        eval_every = max(1, min(eval_every, total_steps // 10 or 1))

    optim = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.learning_rate)
    params = [p for g in optim.param_groups for p in g["params"]]
    trainable, total = count_parameters(model)
    # fp16 autocast on a GPU needs loss scaling (bf16 and fp32 do not); disabled, the scaler is a no-op.
    fp16 = device.type == "cuda" and (cfg.precision == "fp16" or (
        cfg.precision == "auto" and not torch.cuda.is_bf16_supported()))
    scaler = torch.amp.GradScaler("cuda", enabled=fp16)

    state = {"step": 0, "epoch": 0, "pos": 0, "elapsed_s": 0.0, "tokens": 0, "examples": 0, "best_val": float("inf"), "best_step": 0,
             "bad_evals": 0, "history": []}
    ckpt_dir = out / CKPT_DIR
    ckpt, skipped = latest_checkpoint(ckpt_dir)
    resumed_from = 0
    if ckpt is not None:
        load_trainable_state(model, ckpt["trainable"])
        optim.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        resumed_from = state["step"]
        if technique is not None and hasattr(technique, "load_state") and ckpt.get("technique") is not None:
            technique.load_state(model, ckpt["technique"])
        log.info("resuming from step %d (%s)", resumed_from, ckpt_dir)
    for msg in skipped:
        state.setdefault("warnings", []).append(msg)

    def save_checkpoint() -> None:
        payload = {"trainable": trainable_state(model), "optimizer": optim.state_dict(), "state": state,
                   "technique": technique.dump_state(model) if technique is not None and hasattr(technique, "dump_state") else None}
        save_checked(payload, ckpt_dir / f"step-{state['step']:08d}.pt")
        for old in sorted(ckpt_dir.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))[:-2]:
            old.unlink(missing_ok=True)
            old.with_suffix(".pt.sha256").unlink(missing_ok=True)

    def evaluate() -> bool:
        """Record validation metrics; return True when early stopping says stop."""
        vloss = validation_loss(model, val, max(cfg.batch_size, 16), pad_id, device, cfg.precision) if len(val) else float("nan")
        row = {"step": state["step"], "elapsed_s": round(state["elapsed_s"], 2), "train_loss": state.get("ema_loss"),
               "val_loss": vloss, "lr": optim.param_groups[0]["lr"]}
        if val_metrics_fn is not None:
            model.eval()
            row.update(val_metrics_fn(model))
            model.train()
        state["history"].append(row)
        if technique is not None and hasattr(technique, "checkpoint_ready") and not technique.checkpoint_ready(model):
            row["note"] = "technique warming up: not a checkpoint candidate"
            return False
        if not math.isnan(vloss) and vloss < state["best_val"] - 1e-6:
            state["best_val"], state["best_step"], state["bad_evals"] = vloss, state["step"], 0
            save_checked(trainable_state(model), out / BEST_FILE)
        else:
            state["bad_evals"] += 1
        return cfg.early_stopping_patience > 0 and state["bad_evals"] >= cfg.early_stopping_patience

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=state["step"], desc="train", unit="step", dynamic_ncols=True,
                   disable=None)
    stopped = "epochs"
    t_start = time.perf_counter() - state["elapsed_s"]
    finished = False
    while not finished:
        batches = length_grouped_batches(lengths, cfg.batch_size, cfg.seed + state["epoch"], cfg.max_tokens_per_batch)
        for idx in batches[state["pos"]:]:
            elapsed = time.perf_counter() - t_start
            progress_frac = state["step"] / total_steps
            if budget_s:
                progress_frac = max(progress_frac, elapsed / budget_s)
            if progress_frac >= 1.0:
                stopped = "time budget" if budget_s and elapsed >= budget_s else "epochs"
                finished = True
                break
            lr = cfg.learning_rate * lr_factor(progress_frac, cfg.lr_schedule, cfg.warmup_ratio)
            for g in optim.param_groups:
                g["lr"] = lr
            batch = collate(train, idx, pad_id, device)
            w = weights[idx].to(device) if weights is not None else None
            with autocast_context(cfg.precision, device):
                loss, n_tok = seq2seq_loss(model, batch, w, cfg.label_smoothing)
                if technique is not None and hasattr(technique, "regularization"):
                    loss = loss + technique.regularization(model)  # e.g. AdaLoRA's orthogonality penalty
            scaler.scale(loss).backward()
            scaler.unscale_(optim)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optim)
            scaler.update()
            state["step"] += 1
            state["pos"] += 1
            if technique is not None and hasattr(technique, "on_optimizer_step"):
                # Before zero_grad: AdaLoRA scores importance from the gradients.
                technique.on_optimizer_step(model, state["step"], total_steps)
            optim.zero_grad(set_to_none=True)
            state["tokens"] += n_tok
            state["examples"] += len(idx)
            lv = loss.item()
            state["ema_loss"] = lv if state.get("ema_loss") is None else 0.95 * state["ema_loss"] + 0.05 * lv
            state["elapsed_s"] = time.perf_counter() - t_start
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{state['ema_loss']:.3f}", lr=f"{lr:.1e}",
                                tok_s=f"{state['tokens'] / max(state['elapsed_s'], 1e-6):.0f}")
            if state["step"] % eval_every == 0 and evaluate():
                stopped = "early stopping"
                finished = True
                break
            if state["step"] % cfg.checkpoint_every_steps == 0:
                save_checkpoint()
            if (stop_after_steps is not None and state["step"] >= stop_after_steps) or STOP.is_set():
                save_checkpoint()
                if bar is not None:
                    bar.close()
                raise TrainingStopped(f"stopped after step {state['step']} on request; a rerun resumes there")
        else:
            state["epoch"] += 1
            state["pos"] = 0
    if bar is not None:
        bar.close()
    if not state["history"] or state["history"][-1]["step"] != state["step"]:
        evaluate()
    state["elapsed_s"] = time.perf_counter() - t_start
    if (out / BEST_FILE).is_file():
        load_trainable_state(model, load_checked(out / BEST_FILE))
    else:
        save_checked(trainable_state(model), out / BEST_FILE)
    wall = state["elapsed_s"]
    result = TrainResult(
        best_val_loss=state["best_val"], best_step=state["best_step"], global_step=state["step"],
        epochs_done=round(state["step"] / steps_per_epoch, 3), wall_s=round(wall, 2), train_tokens=state["tokens"],
        tokens_per_s=round(state["tokens"] / max(wall, 1e-6), 1), examples_per_s=round(state["examples"] / max(wall, 1e-6), 2),
        peak_rss_mb=round(peak_rss_mb(), 1), trainable_params=trainable, total_params=total, stopped=stopped,
        resumed_from_step=resumed_from, history=state["history"],
    )
    atomic_write_json(done, result.to_dict())
    return result
