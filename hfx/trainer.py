"""build_trainer: TrainingArguments from `trainer.*`, and a Trainer whose evaluation keeps dataset order."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hfx.errors import HfxError
from hfx.labels import IGNORE_INDEX

log = logging.getLogger("hfx")

# Keys of `trainer.*` that hfx resolves itself rather than passing straight through.
_HANDLED = {"extra", "bf16", "average_tokens_across_devices", "save_every_minutes", "dataloader_num_workers"}


@functools.cache
def bf16_is_fast() -> bool:
    """bf16 pays off on CUDA with bf16 support or a CPU with AMX / avx512_bf16; elsewhere it is emulated and slow."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def on_cpu(tcfg: DictConfig) -> bool:
    import torch

    return bool(tcfg.use_cpu) or not torch.cuda.is_available()


def use_bf16(tcfg: DictConfig) -> bool:
    """trainer.bf16, with null resolved: on where the hardware runs it fast."""
    if tcfg.fp16 and on_cpu(tcfg):
        raise HfxError("trainer.fp16: fp16 training needs a CUDA GPU and none is in use; on a CPU use "
                       "trainer.bf16=true (fast on CPUs with AMX or avx512_bf16) or neither")
    if tcfg.bf16 is None:
        return bf16_is_fast() and not tcfg.fp16
    return bool(tcfg.bf16)


def attention_implementation(cfg: DictConfig) -> str | None:
    """model.attn_implementation, with null resolved. bf16 training on a CPU gets `eager`: measured on an
    avx512_bf16 CPU, torch 2.13, it ran 15-24% faster than `sdpa` (MiniLM at 30/128/256 tokens, Llama and BART
    at 128), while in fp32 `sdpa` was as fast or faster. Elsewhere transformers' default (sdpa)."""
    if cfg.model.attn_implementation is not None:
        return cfg.model.attn_implementation
    return "eager" if use_bf16(cfg.trainer) and on_cpu(cfg.trainer) else None


def check_attention(cfg: DictConfig) -> None:
    """model.attn_implementation at composition: a name transformers knows, and a flash attention kernel only where
    a CUDA GPU is in use and its package is installed (otherwise transformers fails when the model is built, after
    the data is tokenized, without naming the key)."""
    chosen = cfg.model.attn_implementation
    if chosen is None or "/" in chosen:  # a hub kernel (org/name) is the hub's to check
        return
    from transformers import utils
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if chosen not in known:
        from hfx.errors import one_of

        raise one_of("model.attn_implementation", chosen, known)
    if chosen.startswith("flash_attention_"):
        if on_cpu(cfg.trainer):
            raise HfxError(f"model.attn_implementation={chosen}: flash attention needs a CUDA GPU and none is in use; "
                           "use sdpa (or null: hfx picks)")
        available = getattr(utils, f"is_{chosen.replace('attention', 'attn')}_available", lambda: False)
        if not available():
            raise HfxError(f"model.attn_implementation={chosen}: its package is not installed (pip install "
                           f"{'flash-attn' if chosen == 'flash_attention_2' else 'the flash-attn release for it'}); "
                           "use sdpa")


def check_compile(tcfg: DictConfig) -> None:
    """trainer.torch_compile where torch's inductor cannot build kernels: it needs a C++ compiler on a CPU (torch's
    own search: $CXX, else g++) and Triton on a CUDA GPU. Otherwise torch fails at the first step, after the data and
    the model are ready, with an error that names no key."""
    backend = (tcfg.extra or {}).get("torch_compile_backend") or "inductor"
    if not tcfg.torch_compile or backend != "inductor":
        return
    if on_cpu(tcfg):
        from torch._inductor import exc
        from torch._inductor.cpp_builder import get_cpp_compiler

        try:
            get_cpp_compiler()
        except exc.InvalidCxxCompiler as e:
            raise HfxError("trainer.torch_compile: compiling for the CPU needs a C++ compiler and none was found "
                           f"(torch looks for $CXX, else g++: {os.environ.get('CXX', 'g++')}); install one, point "
                           "CXX at it, or set trainer.torch_compile=false") from e
        return
    from torch.utils._triton import has_triton

    if not has_triton():
        raise HfxError("trainer.torch_compile: compiling for a CUDA GPU needs Triton (pip install triton), which is "
                       "not installed; or set trainer.torch_compile=false")


def data_workers(tcfg: DictConfig) -> dict[str, Any]:
    """trainer.dataloader_num_workers, with null resolved (see the schema)."""
    if tcfg.dataloader_num_workers is not None:
        return {"dataloader_num_workers": tcfg.dataloader_num_workers}
    if on_cpu(tcfg):
        return {"dataloader_num_workers": 0}
    workers = min(4, max(1, (os.cpu_count() or 2) // 2))
    return {"dataloader_num_workers": workers, "dataloader_persistent_workers": True}


def training_arguments(cfg: DictConfig, task_args: dict[str, Any], output_dir: Path, report_to: list[str],
                       seq2seq: bool = False) -> Any:
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    from hfx.loggers import run_name, trackio_project

    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs = {k: v for k, v in tcfg.items() if k not in _HANDLED}
    kwargs.update(tcfg["extra"])
    average = tcfg["average_tokens_across_devices"]
    merged = {
        **task_args,
        **data_workers(cfg.trainer),
        **kwargs,
        "bf16": use_bf16(cfg.trainer),
        "output_dir": str(output_dir),
        "report_to": report_to or "none",
        # Every tracker names the run alike (the sweep's values in a sweep); trackio's callback takes its project
        # from here.
        "run_name": run_name(cfg.experiment_name, output_dir.parent),
        "project": trackio_project(cfg),
        "use_cpu": on_cpu(cfg.trainer),
    }
    if average is not None:
        merged["average_tokens_across_devices"] = average
    if cfg.dataset.streaming:
        # accelerate's default for a stream reads it on rank 0 and concatenates one batch per rank before splitting,
        # which fails on dynamically padded batches of different widths: each rank reads its own share instead
        # (accelerate shards the stream by files, or by batches when it has fewer files than ranks).
        merged.setdefault("accelerator_config", {"dispatch_batches": False})
    if merged.get("hub_token"):
        # Checkpoints pickle the TrainingArguments (training_args.bin): the token goes where huggingface_hub
        # reads it instead.
        os.environ["HF_TOKEN"] = merged.pop("hub_token")
    cls = Seq2SeqTrainingArguments if seq2seq else TrainingArguments
    try:
        return cls(**merged)
    except TypeError as e:
        raise HfxError(f"trainer.extra: {e}") from e
    except ValueError as e:
        raise HfxError(f"trainer: {str(e).splitlines()[0]}") from e


def ordered_eval(trainer_cls: type) -> type:
    """A Trainer subclass whose evaluation/prediction batches follow dataset order.

    With train_sampling_strategy=group_by_length, transformers also length-groups the eval sampler, so anything
    that lines predictions up with rows (QA spans, NER words, generated text) would be silently wrong."""
    from torch.utils.data import SequentialSampler
    from transformers.trainer_utils import has_length

    class OrderedEvalTrainer(trainer_cls):
        def _get_eval_sampler(self, eval_dataset: Any) -> Any:
            if eval_dataset is None or not has_length(eval_dataset):
                return None
            return SequentialSampler(eval_dataset)

        def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
            # Under several processes accelerate pads the last evaluation batch with rows from the start, and
            # `gather_for_metrics` drops them again. Seq2SeqTrainer gathers with a plain `gather` instead, which keeps
            # them: predictions would outnumber the rows (an IndexError, or metrics counting rows twice).
            self.gather_function = functools.partial(self.accelerator.gather_for_metrics,
                                                     use_gather_object=self.args.eval_use_gather_object)
            return super().evaluation_loop(*args, **kwargs)

    OrderedEvalTrainer.__name__ = f"Hfx{trainer_cls.__name__}"
    return OrderedEvalTrainer


def label_weighted_loss(trainer_cls: type) -> type:
    """A Trainer subclass whose training loss is the same under any number of processes and accumulation steps.

    transformers passes `num_items_in_batch` (the labels of the whole optimizer step: all micro-batches, and all
    ranks under `average_tokens_across_devices`) to the model and multiplies the loss by the world size, assuming the
    model's loss divides by that count. The encoder heads (BERT-like sequence / token classification, masked LM) and
    encoder-decoder models (BART) ignore it and average over their own batch: their loss and gradients came out
    world-size (and accumulation-steps) times too large. Here every model is called without the count, so that its
    loss is the mean over its own labels, and that mean is turned into its share of the step's mean: times this
    process's label count, divided by the step's count (times the world size when the count spans the ranks, as the
    Trainer does, since DDP averages gradients). Exact for models that honour the count too (causal LMs).
    Evaluation batches get their plain mean, as in one process."""

    class LabelWeightedLoss(trainer_cls):
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            labels = inputs.get("labels")
            if not model.training:
                # Evaluation: the mean over this batch, as one process computes it (the Trainer's eval_loss is a
                # mean over batches), not this rank's share of a step spanning the ranks.
                return super().compute_loss(model, inputs, return_outputs=return_outputs)
            if (num_items_in_batch is None or labels is None or self.compute_loss_func is not None
                    or self.args.n_gpu > 1):
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            # Counted as the Trainer counts num_items_in_batch (a causal LM's unshifted labels included).
            counted = inputs.get("shift_labels")
            mine = (labels if counted is None else counted).ne(IGNORE_INDEX).sum()
            out = super().compute_loss(model, inputs, return_outputs=return_outputs)
            loss, outputs = out if return_outputs else (out, None)
            scale = mine.to(loss.device) / num_items_in_batch
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                scale = scale * self.accelerator.num_processes
            loss = loss * scale
            return (loss, outputs) if return_outputs else loss

    LabelWeightedLoss.__name__ = trainer_cls.__name__
    return LabelWeightedLoss


def build_trainer(cfg: DictConfig, task: Any, model: Any, tokenizer: Any, features: dict[str, Any], labels: Any,
                  output_dir: Path, report_to: list[str]) -> Any:
    from transformers import Seq2SeqTrainer, Trainer

    from hfx.checkpointing import callbacks, resumable
    from hfx.tasks import task_settings

    settings = task_settings(cfg, task)
    seq2seq = getattr(task, "seq2seq", False)
    args = training_arguments(cfg, task.training_args(settings), output_dir, report_to, seq2seq=seq2seq)
    cls = resumable(label_weighted_loss(ordered_eval(Seq2SeqTrainer if seq2seq else Trainer)))
    return cls(
        model=model,
        args=args,
        train_dataset=features["train"],
        eval_dataset=features["eval"],
        processing_class=tokenizer,
        data_collator=task.collator(tokenizer, model, settings),
        callbacks=callbacks(cfg.trainer.save_every_minutes),
        **task.trainer_kwargs(tokenizer, settings, labels),
    )
