"""Attention weights of a finished run's model on one input: computed with an attention kernel that returns them
(eager), selected by layer and head, and written as one heatmap grid per layer, the arrays (attention.npz), what
they are (attention.json) and a page that shows them (index.html)."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfx.errors import HfxError, UsageError


@dataclass
class AttentionMaps:
    tokens: list[str]  # the positions attended to (keys): a prompt / prefix adapter's virtual tokens, then the input's
    special: list[bool]  # special tokens ([CLS], </s>, virtual ones), marked in the plots
    input_ids: list[int]
    layers: list[int]
    heads: list[int]
    # layer -> float32 array [len(heads), queries, keys]: row i, how query i spreads its attention over the keys.
    # The queries are the last `queries` of the keys (all of them but under prefix tuning).
    maps: dict[int, Any]
    source: str  # "attentions" (encoder or decoder) or "encoder_attentions" (an encoder-decoder's encoder)


def counts(config: Any) -> tuple[int, int]:
    """(layers, heads) of a transformers config (GPT-2's n_layer / n_head and BART's encoder_* map onto these)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.num_hidden_layers), int(text.num_attention_heads)


def selection(key: str, chosen: Any, count: int, what: str) -> list[int]:
    """`layers=` / `heads=`: null = all; one index or a list, each in 0..count-1."""
    if chosen is None:
        return list(range(count))
    chosen = [chosen] if isinstance(chosen, int) else list(chosen)
    if not chosen:
        raise UsageError(f"{key}: expected at least one {what} index (or leave it out for all {count})")
    for i in chosen:
        if not 0 <= i < count:
            raise UsageError(f"{key}: {what} {i} is out of range; the model has {count} {what}s (0-{count - 1})")
    return list(dict.fromkeys(chosen))


def selected(run: Any, layers: Any, heads: Any) -> tuple[list[int], list[int]]:
    """The layers and heads asked for, checked against the saved model's config before any weight is loaded."""
    from transformers import AutoConfig

    n_layers, n_heads = counts(AutoConfig.from_pretrained(str(run.model_dir)))
    return selection("layers", layers, n_layers, "layer"), selection("heads", heads, n_heads, "head")


def eager_model(run: Any) -> Any:
    """The run's model (the shared run loader: merged or adapter) switched to transformers' eager attention, the
    kernel that returns attention weights (sdpa and flash attention do not)."""
    import warnings

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" bars: an error line stays alone on stderr
    # peft reads transformers' deprecated `is_gradient_checkpointing` alias (as in hfx.adapters).
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    model = run.model().eval()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation("eager")
    return model


def encode(run: Any, tokenizer: Any, text: str) -> Any:
    """The input as the model sees it: a JSON object with the task's fields (e.g. question and context) is a text
    pair; anything else is one text. Truncated to the run's tokenizer.max_length."""
    record: Any = None
    if text.lstrip().startswith("{"):
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            pass
    parts = [text]
    if isinstance(record, dict) and record:
        parts = [str(record[f]) for f in run.task.predict_fields if record.get(f)] or [str(next(iter(record.values())))]
    return tokenizer(*parts[:2], return_tensors="pt", truncation=True, max_length=run.cfg.tokenizer.max_length)


def compute(run: Any, model: Any, text: str, layers: list[int], heads: list[int]) -> AttentionMaps:
    """The weights of the chosen layers and heads on `text`, tokenized as the run's tokenizer does."""
    import torch

    tokenizer = run.tokenizer()
    batch = encode(run, tokenizer, text)
    if batch["input_ids"].shape[1] == 0:
        raise UsageError("input: the tokenizer gives no tokens for this text")
    if model.config.is_encoder_decoder:  # the encoder's self-attention; the decoder gets its start token only
        start = model.config.decoder_start_token_id
        batch["decoder_input_ids"] = torch.tensor([[start if start is not None else tokenizer.pad_token_id]])
    with torch.inference_mode():
        output = model(**batch, output_attentions=True)
    source = "encoder_attentions" if model.config.is_encoder_decoder else "attentions"
    weights = getattr(output, source, None)
    if not weights or weights[0] is None:
        raise HfxError(f"attention: {type(model).__name__} returned no attention weights with eager attention")
    ids = batch["input_ids"][0].tolist()
    maps = {layer: weights[layer][0, heads].float().numpy() for layer in layers}
    # Prompt tuning prepends virtual tokens to the input (queries and keys), prefix tuning to the keys only.
    queries, keys = next(iter(maps.values())).shape[-2:]
    virtual = keys - len(ids)
    if virtual < 0 or queries not in (len(ids), keys):
        raise HfxError(f"attention: {queries} x {keys} attention weights for an input of {len(ids)} tokens")
    special_ids = set(tokenizer.all_special_ids)
    tokens = [f"[virtual {i}]" for i in range(virtual)] + [display_token(tokenizer, i) for i in ids]
    special = [True] * virtual + [i in special_ids for i in ids]
    return AttentionMaps(tokens=tokens, special=special, input_ids=ids, layers=layers, heads=heads, maps=maps,
                         source=source)


def display_token(tokenizer: Any, token_id: int) -> str:
    """A token as a person reads it (byte-level BPE's 'Ġ' shown as the space it is); never empty."""
    token = tokenizer.convert_ids_to_tokens(token_id)
    try:
        text = tokenizer.convert_tokens_to_string([token])
    except Exception:  # a tokenizer without a decoder for single tokens
        text = token
    text = text if text.strip() else repr(text)
    return text


def write(maps: AttentionMaps, target: Path, title: str, text: str) -> dict[str, Any]:
    """layer_<i>.png per layer, attention.npz, attention.json and index.html in `target` (an existing folder)."""
    import numpy as np

    from hfx.plots import plot_attention_grid

    images = {}
    for layer in maps.layers:
        name = f"layer_{layer}.png"
        width, height = plot_attention_grid(maps.maps[layer], maps.heads, maps.tokens, maps.special,
                                            f"{title}: layer {layer}", target / name)
        images[str(layer)] = {"file": name, "width": width, "height": height}
    np.savez_compressed(target / "attention.npz", input_ids=np.array(maps.input_ids),
                        **{f"layer_{layer}": maps.maps[layer] for layer in maps.layers})
    info = {"title": title, "input": text, "tokens": maps.tokens, "special": maps.special, "layers": maps.layers,
            "heads": maps.heads, "source": maps.source, "images": images,
            "arrays": "attention.npz: layer_<i> [heads, tokens, tokens], row i = how token i attends"}
    (target / "attention.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    (target / "index.html").write_text(index_html(info))
    return info


def index_html(info: dict[str, Any]) -> str:
    e = html.escape
    tokens = " ".join(f'<span class="{"special" if s else "tok"}">{e(t)}</span>'
                      for t, s in zip(info["tokens"], info["special"], strict=True))
    figures = "\n".join(
        f'<h2>Layer {layer}</h2>\n<img src="{e(img["file"])}" width="{img["width"]}" height="{img["height"]}" '
        f'alt="attention of layer {layer}, heads {", ".join(map(str, info["heads"]))}">'
        for layer, img in info["images"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(info["title"])}</title>
<style>body{{font-family:sans-serif;margin:2em}} img{{max-width:100%;height:auto}}
.tok,.special{{display:inline-block;padding:0 .3em;margin:.1em;border:1px solid #ccc;border-radius:3px}}
.special{{color:#c00;font-weight:bold}}</style></head>
<body>
<h1>{e(info["title"])}</h1>
<p>Input: <q>{e(info["input"])}</q></p>
<p>Tokens ({len(info["tokens"])}; special tokens in red): {tokens}</p>
<p>Heads {", ".join(map(str, info["heads"]))}. Each heatmap row is one token (query) and how its attention weights
spread over the tokens (keys) of the input; every row sums to 1. The arrays are in attention.npz.</p>
{figures}
</body></html>
"""
