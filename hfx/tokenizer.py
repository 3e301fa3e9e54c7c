"""build_tokenizer: the model's own tokenizer, or one trained on the training split for from-scratch models."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from hfx.distributed import main_process_first
from hfx.errors import HfxError
from hfx.files import new_dir
from hfx.registry import Registry

log = logging.getLogger("hfx")

TextSource = Callable[[], Iterator[str]]
TOKENIZERS: Registry[Callable[..., Any]] = Registry("tokenizer")
# Kinds that train a new vocabulary on the training split: for models built from scratch only.
TRAINED_KINDS = ("wordpiece", "bpe")

SPECIALS = {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]",
            "mask_token": "[MASK]", "bos_token": "<s>", "eos_token": "</s>"}


def build_tokenizer(tcfg: DictConfig, mcfg: DictConfig, texts: TextSource, cache_dir: str, data_key: str) -> Any:
    from hfx.special_tokens import add_configured_tokens

    tok = TOKENIZERS.get(tcfg.kind)(tcfg, mcfg, texts, cache_dir, data_key)
    tok = add_configured_tokens(tok, tcfg, texts)  # tokenizer.add_tokens / special_tokens
    tok.model_max_length = tcfg.max_length
    return tok


@TOKENIZERS.register("pretrained")
def pretrained_tokenizer(tcfg: DictConfig, mcfg: DictConfig, texts: TextSource, cache_dir: str, data_key: str) -> Any:
    from transformers import AutoTokenizer

    source = tcfg.name_or_path or mcfg.name_or_path
    if not source:
        raise HfxError(
            "tokenizer: 'pretrained' needs tokenizer.name_or_path or model.name_or_path; "
            "a model built from scratch needs a trained tokenizer (tokenizer=wordpiece or tokenizer=bpe)"
        )
    try:
        tok = AutoTokenizer.from_pretrained(source, revision=mcfg.revision, trust_remote_code=mcfg.trust_remote_code)
    except OSError as e:
        raise HfxError(f"tokenizer: cannot load '{source}' ({str(e).splitlines()[0]})") from e
    if tok.pad_token is None:
        # Decoder-only tokenizers often lack a pad token; padding with EOS is the usual choice.
        tok.pad_token = tok.eos_token
    return tok


def _trained(kind: str, tcfg: DictConfig, texts: TextSource, cache_dir: str, data_key: str) -> Any:
    """Train (or reuse from cache) a tokenizer on the training texts."""
    key = hashlib.sha256(
        repr((kind, data_key, tcfg.vocab_size, tcfg.min_frequency, tcfg.lowercase, tcfg.train_samples)).encode()
    ).hexdigest()[:16]
    path = Path(os.path.expanduser(cache_dir)) / "tokenizers" / f"{kind}-{key}"
    # Training is not deterministic across processes (ties in the merges): rank 0 trains, the others load its copy.
    with main_process_first():
        return _train_or_load(kind, tcfg, texts, path)


def _train_or_load(kind: str, tcfg: DictConfig, texts: TextSource, path: Path) -> Any:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (path / "tokenizer.json").is_file():
        log.info("reusing %s tokenizer from cache %s", kind, path)
        return AutoTokenizer.from_pretrained(str(path))
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    log.info("training a %s tokenizer (vocab %d) on the training split", kind, tcfg.vocab_size)
    specials = list(dict.fromkeys(SPECIALS.values()))
    if kind == "wordpiece":
        tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tk.normalizer = normalizers.BertNormalizer(lowercase=tcfg.lowercase)
        tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tk.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=tcfg.vocab_size, min_frequency=tcfg.min_frequency,
                                            special_tokens=specials)
    else:
        tk = Tokenizer(models.BPE(unk_token="[UNK]"))
        if tcfg.lowercase:
            tk.normalizer = normalizers.Lowercase()
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=tcfg.vocab_size, min_frequency=tcfg.min_frequency,
                                      special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    sample = itertools.islice(texts(), tcfg.train_samples) if tcfg.train_samples > 0 else texts()
    tk.train_from_iterator(sample, trainer=trainer)
    cls, sep = tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")
    if kind == "wordpiece":
        tk.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
        )
    # tokenizers-trained vocabularies reload without a special_tokens_map: name every special explicitly.
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, **SPECIALS)
    with new_dir(path) as tmp:
        tok.save_pretrained(str(tmp))
    return AutoTokenizer.from_pretrained(str(path))


@TOKENIZERS.register("wordpiece")
def wordpiece_tokenizer(tcfg: DictConfig, mcfg: DictConfig, texts: TextSource, cache_dir: str, data_key: str) -> Any:
    return _trained("wordpiece", tcfg, texts, cache_dir, data_key)


@TOKENIZERS.register("bpe")
def bpe_tokenizer(tcfg: DictConfig, mcfg: DictConfig, texts: TextSource, cache_dir: str, data_key: str) -> Any:
    return _trained("bpe", tcfg, texts, cache_dir, data_key)


@TOKENIZERS.register("auto")
def auto_tokenizer(tcfg: DictConfig, mcfg: DictConfig, texts: TextSource, cache_dir: str, data_key: str) -> Any:
    """The pretrained model's tokenizer; for a model built from scratch, WordPiece (encoders) or BPE (others)."""
    if tcfg.name_or_path or mcfg.name_or_path:
        return pretrained_tokenizer(tcfg, mcfg, texts, cache_dir, data_key)
    from hfx.architectures import ARCHITECTURES

    return _trained(ARCHITECTURES.get(mcfg.architecture).tokenizer, tcfg, texts, cache_dir, data_key)
