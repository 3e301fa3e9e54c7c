"""tokenizer.add_tokens / tokenizer.special_tokens (hfx/special_tokens.py): tokens added to a pretrained and to a
trained tokenizer, the embeddings grown for them, their rows trained (under LoRA: those rows alone), saved with the
model and tokenizer, and served by `hfx predict`."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import TINY, assert_one_line_error, predict_ok, run_hfx, train_ok

POSITIVE = ["a great <prod> that works", "i love this <prod> a lot", "the <prod> is excellent", "a wonderful film"]
NEGATIVE = ["a terrible <prod> that broke", "i hate this <prod>", "the <prod> is awful", "a boring film"]


def review_data(folder: Path) -> list[str]:
    """A small sentiment CSV whose reviews name a product with the markup token <prod>."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 64), ("validation", 16)):
        with open(folder / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            for i in range(n):
                texts = POSITIVE if i % 2 else NEGATIVE
                writer.writerow([texts[(i // 2) % len(texts)], "positive" if i % 2 else "negative"])
    return [f"dataset.data_files.train={folder / 'train.csv'}",
            f"dataset.data_files.validation={folder / 'validation.csv'}"]


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def word_embeddings(state: dict):
    (key,) = [k for k in state if k.endswith("word_embeddings.weight")]
    return state[key]


def test_added_tokens_train_under_lora_alone_and_are_served(cache, tmp_path) -> None:
    """MiniLM + LoRA: <prod> (a plain added token), <dom> (a new special token) and a new sep_token get rows; those
    rows move in training while every pretrained row stays bit-identical in the merged model; the saved tokenizer
    keeps them and `hfx predict` reads <prod> as one token."""
    from transformers import AutoConfig, AutoTokenizer

    from hfx.config.store import packaged_model

    run = tmp_path / "run"
    train_ok(run, "model=minilm", "+model.config.num_hidden_layers=2", "peft=lora", "logger=none",
             "trainer.max_steps=6", "trainer.learning_rate=1e-2", "dataset.max_eval_samples=8",
             *review_data(tmp_path / "data"), 'tokenizer.add_tokens=["<prod>","film"]',
             'tokenizer.special_tokens={sep_token: "<SEP2>", additional_special_tokens: ["<dom>"]}', cache=cache)
    log = (run / "train.log").read_text()
    assert "tokenizer: added 3 tokens (<prod>, <SEP2>, <dom>), 30525 now; already in the vocabulary, not added: film" \
        in log, log[-3000:]
    # Before: the markup split into pieces; after: one token, and the new separator closes the row already in training.
    assert "a training row with a new token before: [CLS] a terrible < pro ##d > that broke [SEP] (10 tokens)" in log
    assert "a training row with a new token after:  [CLS] a terrible <prod> that broke <SEP2> (7 tokens)" in log
    assert "embeddings resized from 30522 to 30525 rows" in log
    assert "the embedding rows of 3 new tokens trained" in log

    base = word_embeddings(weights(Path(packaged_model("minilm"))))
    trained = word_embeddings(weights(run / "model"))
    assert trained.shape == (30525, base.shape[1])
    assert (trained[: len(base)] == base).all()  # LoRA: every pretrained row bit-identical
    # New rows start at the mean of the old ones (a spread of about 1e-6): training moved those of the tokens in the
    # data (<prod>, and <SEP2> ending every row) well away; <dom> never occurs, so its row has had no gradient.
    tokenizer = AutoTokenizer.from_pretrained(str(run / "model"))
    moved = (trained - base.mean(0)).abs().amax(1)
    prod, sep, dom = tokenizer.convert_tokens_to_ids(["<prod>", "<SEP2>", "<dom>"])
    assert sorted([prod, sep, dom]) == [30522, 30523, 30524]
    assert moved[prod] > 1e-3 and moved[sep] > 1e-3 and moved[dom] < 1e-4, moved[len(base):]

    assert AutoConfig.from_pretrained(str(run / "model")).vocab_size == len(tokenizer) == 30525
    assert tokenizer.sep_token == "<SEP2>" and "<dom>" in tokenizer.all_special_tokens
    ids = tokenizer("i love this <prod>")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "i", "love", "this", "<prod>", "<SEP2>"]
    (row,) = predict_ok(run, "i love this <prod>", cache)
    assert row["prediction"][0]["label"] in ("positive", "negative")


def test_added_tokens_without_peft_on_a_trained_tokenizer(cache, tmp_path) -> None:
    """A model built from scratch with a WordPiece tokenizer trained on the data: the added token is one id of a
    vocabulary the model embeds in full, trained with every other weight, saved and served."""
    from transformers import AutoTokenizer

    run = tmp_path / "run"
    train_ok(run, *TINY, "trainer.max_steps=4", *review_data(tmp_path / "data"), 'tokenizer.add_tokens=["<prod>"]',
             cache=cache)
    log = (run / "train.log").read_text()
    assert "tokenizer: added 1 token (<prod>)" in log, log[-3000:]
    assert "embeddings resized" not in log  # built for the tokenizer's size already
    tokenizer = AutoTokenizer.from_pretrained(str(run / "model"))
    assert tokenizer.tokenize("this <prod>") == ["this", "<prod>"]
    assert word_embeddings(weights(run / "model")).shape[0] == len(tokenizer)
    predict_ok(run, "i hate this <prod>", cache)


def test_a_special_tokens_key_that_is_not_a_special_token_is_one_line(cache, tmp_path) -> None:
    r = run_hfx("train", f"hydra.run.dir={tmp_path / 'run'}", 'tokenizer.special_tokens={sepp_token: "<S>"}',
                cache=cache)
    assert_one_line_error(r, "tokenizer.special_tokens.sepp_token", "did you mean 'sep_token'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("overrides", "expected"), [
    (["peft=prompt_tuning"], "peft=prompt_tuning keeps the embeddings frozen"),
])
def test_peft_settings_that_cannot_keep_added_tokens_are_refused(overrides, expected) -> None:
    import torch
    import transformers

    from hfx.adapters import apply_peft
    from hfx.config.compose import compose
    from hfx.errors import HfxError

    config = transformers.AutoConfig.for_model("bert", vocab_size=120, hidden_size=32, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=64)
    with torch.device("meta"):
        model = transformers.AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(HfxError, match=expected):
        apply_peft(model, compose("train", overrides).peft, [], "SEQ_CLS", (), [118, 119])


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_an_adapter_kept_separate_keeps_the_added_tokens(method, tmp_path) -> None:
    """peft.merge_on_save=false with added tokens: the adapter holds the trained new rows (LoRA: those rows alone;
    IA3: the input embeddings in full), and loading grows the pretrained base's embeddings before the adapter goes
    on, so the loaded model gives the trained model's outputs on rows that use the new tokens."""
    import torch
    import transformers
    from omegaconf import OmegaConf

    from hfx.adapters import apply_peft, merge_for_saving
    from hfx.config.compose import compose
    from hfx.saved_adapters import load_adapter

    transformers.set_seed(0)
    config = transformers.AutoConfig.for_model("bert", vocab_size=120, hidden_size=32, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=64, num_labels=2)
    auto = transformers.AutoModelForSequenceClassification
    auto.from_config(config).save_pretrained(str(tmp_path / "pretrained"))  # the hub checkpoint, 120 rows
    model = auto.from_pretrained(str(tmp_path / "pretrained"))
    model.resize_token_embeddings(123)  # three tokens added by the run
    pcfg = compose("train", [f"peft={method}", "peft.merge_on_save=false"]).peft
    wrapped = apply_peft(model, pcfg, ["classifier"], "SEQ_CLS", (), [120, 121, 122])
    with torch.no_grad():
        for p in wrapped.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    wrapped.eval()
    batch = {"input_ids": torch.tensor([[3, 120, 7, 121, 9], [11, 122, 13, 4, 5]])}
    with torch.no_grad():
        before = wrapped(**batch).logits
    merge_for_saving(wrapped, pcfg).save_pretrained(str(tmp_path / "run"))
    mcfg = OmegaConf.create({"name_or_path": str(tmp_path / "pretrained"), "revision": None,
                             "trust_remote_code": False})
    loaded = load_adapter(auto, tmp_path / "run", mcfg)
    assert loaded.get_input_embeddings().weight.shape[0] == 123
    with torch.no_grad():
        after = loaded(**batch).logits
    assert torch.allclose(before, after, atol=1e-6), (before, after)
