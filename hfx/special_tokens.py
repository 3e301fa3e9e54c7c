"""tokenizer.add_tokens and tokenizer.special_tokens: tokens added to the run's tokenizer, the model's embeddings grown
to fit them (new rows start at the mean of the old ones), and the ids whose rows PEFT trains (adapters.apply_peft)."""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("hfx")

# The ids of the tokens this run added, kept on the tokenizer object the run trains with (not saved with it).
NEW_IDS = "hfx_new_token_ids"
# Training rows searched for one that holds a new token, for the log's before / after sample.
SAMPLE_SEARCH = 10_000
SAMPLE_CHARS = 60


def configured(tcfg: DictConfig) -> tuple[list[str], dict[str, Any]]:
    """tokenizer.add_tokens, and the special-token attributes that are set (additional_special_tokens as a list)."""
    section = tcfg.get("special_tokens")
    specials = {k: v for k, v in (OmegaConf.to_container(section, resolve=True) if section else {}).items() if v}
    return list(tcfg.get("add_tokens") or []), specials


def add_configured_tokens(tok: Any, tcfg: DictConfig, texts: Callable[[], Iterator[str]]) -> Any:
    """The tokenizer with tokenizer.add_tokens and tokenizer.special_tokens added, reloaded from a saved copy so that it
    tokenizes exactly as the saved model's tokenizer will (transformers rebuilds the [CLS] ... [SEP] template from the
    special tokens only when a tokenizer is loaded). Logs what was added and a sample row before and after."""
    plain, specials = configured(tcfg)
    if not plain and not specials:
        return tok
    wanted = list(dict.fromkeys([*plain, *[t for v in specials.values() for t in ([v] if isinstance(v, str) else v)]]))
    before_vocab = tok.get_vocab()
    new = [t for t in wanted if t not in before_vocab]
    sample, window = _sample(texts, new)
    before = _tokens(tok, window)
    if plain:
        tok.add_tokens(plain)
    if specials:
        tok.add_special_tokens(specials, replace_extra_special_tokens=False)
    tok = _reloaded(tok)
    vocab = tok.get_vocab()
    added = [t for t in wanted if t in vocab and t not in before_vocab]
    setattr(tok, NEW_IDS, sorted({vocab[t] for t in added}))
    kept = [t for t in wanted if t in before_vocab]
    log.info("tokenizer: added %s (%s), %d now%s", plural(len(added), "token"), ", ".join(added) or "none", len(tok),
             f"; already in the vocabulary, not added: {', '.join(kept)}" if kept else "")
    if specials:
        log.info("tokenizer: special tokens %s", ", ".join(f"{k}={v}" for k, v in specials.items()))
    where = "a training row with a new token" if sample is not None else "the first training row"
    log.info("tokenizer: %s before: %s (%d tokens)", where, _shown(before), len(before))
    after = _tokens(tok, window)
    log.info("tokenizer: %s after:  %s (%d tokens)", where, _shown(after), len(after))
    return tok


def _sample(texts: Callable[[], Iterator[str]], new: list[str]) -> tuple[str | None, str]:
    """The first training text holding a new token (and a window of it around that token), else the first text."""
    first = None
    for text in itertools.islice(texts(), SAMPLE_SEARCH):
        text = str(text)
        first = text if first is None else first
        hits = [text.find(t) for t in new if t in text]
        if hits:
            at = min(hits)
            start = max(0, at - SAMPLE_CHARS)
            return text, ("..." if start else "") + text[start : at + SAMPLE_CHARS]
    first = first or ""
    return None, first[: 2 * SAMPLE_CHARS]


def _tokens(tok: Any, text: str) -> list[str]:
    """The tokens the model sees for `text`, special tokens included."""
    return tok.convert_ids_to_tokens(tok(text)["input_ids"])


def _shown(tokens: list[str], limit: int = 40) -> str:
    return " ".join(tokens[:limit]) + (" ..." if len(tokens) > limit else "")


def _reloaded(tok: Any) -> Any:
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        return AutoTokenizer.from_pretrained(tmp)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def new_token_ids(tokenizer: Any) -> list[int]:
    """The ids of the tokens this run added (empty for a tokenizer loaded from a finished run)."""
    return list(getattr(tokenizer, NEW_IDS, []))


def base_size(tokenizer: Any) -> int:
    """The tokenizer's size without the tokens this run added: what a pretrained model must already embed."""
    return len(tokenizer) - len(new_token_ids(tokenizer))


def fit_embeddings(model: Any, tokenizer: Any) -> None:
    """Grow the model's input (and tied output) embeddings to the tokenizer's size. transformers' mean_resizing starts
    the new rows at the mean of the old ones (sampled with a negligible spread), not at random vectors that would
    swamp the first steps."""
    emb = model.get_input_embeddings()
    rows = emb.weight.shape[0]
    if len(tokenizer) <= rows:
        return
    meta = emb.weight.device.type == "meta"  # hfx check: shapes only, nothing to average
    model.resize_token_embeddings(len(tokenizer), mean_resizing=not meta)
    if not meta:
        log.info("model: embeddings resized from %d to %d rows for the added tokens (new rows start at the mean of "
                 "the old ones)", rows, len(tokenizer))
