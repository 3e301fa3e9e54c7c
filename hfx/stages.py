"""The run's stages, shared by every command: `prepare_data` (splits, tokenizer, labels, features), `prepare`
(the same plus the model, PEFT-wrapped) for training, and `load_run` for a finished run directory."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hfx.errors import HfxError

log = logging.getLogger("hfx")

TASK_FILE = "hfx_task.json"


@dataclass
class Data:
    task: Any
    raw: Any  # DatasetDict: train and eval, or eval only
    tokenizer: Any
    labels: list[str] | None
    features: dict[str, Any]
    settings: Any  # the TaskSettings the task received


@dataclass
class Prepared(Data):
    model: Any = None
    # What `freeze` froze, compactly (None when nothing was): metrics.json's `frozen`.
    frozen: str | None = None


def prepare_data(cfg: DictConfig, tokenizer: Any = None, labels: list[str] | None = None,
                 eval_only: bool = False) -> Data:
    """Raw splits checked by the task, a tokenizer (built, or the given one), labels and cached features."""
    from hfx.data import load_splits, tokenize_splits
    from hfx.dataops import filter_tokens
    from hfx.streaming import is_stream, sample, shuffled
    from hfx.tasks import TASKS, task_settings
    from hfx.tokenizer import build_tokenizer

    task = TASKS.get(cfg.task.name)
    settings = task_settings(cfg, task)
    raw = load_splits(cfg.dataset, cfg.trainer.seed, eval_only=eval_only, columns=settings.columns)
    seen = sample(raw, cfg.dataset)  # a streamed train split: its first rows stand for it (hfx/streaming.py)
    task.validate_data(seen, settings)
    if tokenizer is None:
        tokenizer = build_tokenizer(cfg.tokenizer, cfg.model, lambda: task.training_texts(seen["train"], settings),
                                    cfg.cache_dir, seen["train"]._fingerprint)
    raw = filter_tokens(raw, cfg.dataset, tokenizer, settings.columns)  # needs the tokenizer: the last data op
    if labels is None and not eval_only:
        labels = task.label_names(seen if is_stream(raw["train"]) else raw, settings)
    features = tokenize_splits(raw, task, tokenizer, settings, labels, cfg.cache_dir)
    if not eval_only and is_stream(features["train"]):
        features["train"] = shuffled(features["train"], cfg.dataset, cfg.trainer.seed)
    return Data(task, raw, tokenizer, labels, features, settings)


def prepare(cfg: DictConfig) -> Prepared:
    """Everything a training run needs before the Trainer: data, tokenizer, features, model, PEFT."""
    from transformers import set_seed

    from hfx.adapters import apply_peft
    from hfx.freezing import apply_freeze
    from hfx.model import build_model, load_config
    from hfx.special_tokens import fit_embeddings, new_token_ids
    from hfx.trainer import attention_implementation

    set_seed(cfg.trainer.seed)
    data = prepare_data(cfg)
    task = data.task
    model_config = load_config(cfg.model, data.tokenizer, task.model_kwargs(data.labels))
    task.check_model(model_config, data.settings)
    # The Trainer seeds only when it is created, after new heads exist: seed here so runs repeat.
    set_seed(cfg.trainer.seed)
    built = build_model(cfg.model, task.auto_model_class(), model_config, attention_implementation(cfg))
    fit_embeddings(built.model, data.tokenizer)  # rows for the tokens tokenizer.add_tokens / special_tokens added
    model = apply_peft(built.model, cfg.peft, built.fresh_modules, task.peft_task_type, task.head_modules,
                       new_token_ids(data.tokenizer))
    frozen = apply_freeze(model, cfg.freeze, task.head_modules, built.fresh_modules)
    return Prepared(task, data.raw, data.tokenizer, data.labels, data.features, data.settings, model, frozen)


@dataclass
class FinishedRun:
    """A run directory written by `hfx train`: its config (typed again by the schemas), task, labels, model."""

    path: Path
    cfg: DictConfig
    task: Any
    info: dict[str, Any]

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def labels(self) -> list[str] | None:
        return self.info.get("labels")

    @property
    def pipeline(self) -> str:
        return self.info["pipeline"]

    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.model_dir))

    @property
    def adapter(self) -> bool:
        """The model was saved as a PEFT adapter beside its base (prefix / prompt tuning, peft.merge_on_save=false)."""
        from hfx.saved_adapters import has_adapter

        return has_adapter(self.model_dir)

    def model(self) -> Any:
        from transformers import AutoConfig

        if self.adapter:
            from hfx.saved_adapters import load_adapter

            return load_adapter(self.task.auto_model_class(), self.model_dir, self.cfg.model)
        config = AutoConfig.from_pretrained(str(self.model_dir))
        return self.task.auto_model_class().from_pretrained(str(self.model_dir), config=config,
                                                                    use_safetensors=True)


def load_run(run: str | Path) -> FinishedRun:
    """The finished run in `run`, or a one-line error saying why that directory is not one."""
    from hfx.config.store import typed_train_config
    from hfx.tasks import TASKS

    path = Path(run).expanduser()
    info_file = path / "model" / TASK_FILE
    if not path.is_dir():
        raise HfxError(f"run={run}: no such directory (expected a run directory written by `hfx train`)")
    if not info_file.is_file():
        raise HfxError(f"run={run}: not a finished hfx run (expected {info_file}, written by `hfx train` when it "
                       "saves the model)")
    info = json.loads(info_file.read_text())
    task = TASKS.get(info["task"])
    config_file = path / "config.yaml"
    if not config_file.is_file():
        raise HfxError(f"run={run}: {config_file} is missing (`hfx train` writes it first)")
    cfg = typed_train_config(OmegaConf.load(config_file), f"run={run}: config.yaml")
    return FinishedRun(path, cfg, task, info)


def model_info(data: Data) -> dict[str, Any]:
    """What `load_run` reads back: saved beside the model as hfx_task.json."""
    return {TASK_FILE: {"task": data.task.name, "pipeline": data.task.pipeline_name(data.settings),
                        "labels": data.labels}}
