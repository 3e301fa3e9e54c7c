"""The freeze group: which parameters train under each setting (with and without PEFT, on a BERT classifier and on
Llama / GPT-2 language models built from config), its one-line refusals, and a real run whose frozen weights come
out bit-identical to the pretrained ones while the rest moved."""

from __future__ import annotations

import json
import logging

import pytest

from hfx.config.compose import check_composed, compose
from hfx.errors import HfxError
from tests.conftest import train_ok
from tests.test_adapters import HEADS, tiny, wrap


def freeze(model, *overrides: str, head_modules=HEADS):
    from hfx.freezing import apply_freeze

    return apply_freeze(model, compose("train", list(overrides)).freeze, head_modules)


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_parts_of_a_classifier_freeze_as_configured(caplog) -> None:
    model, _ = tiny("bert")
    everything = trainable(model)
    with caplog.at_level(logging.INFO, logger="hfx"):
        frozen = freeze(model, "freeze=embeddings", "freeze.layers=1")
    assert frozen == "bert.embeddings, bert.encoder.layer.0"
    assert trainable(model) == {n for n in everything
                                if not n.startswith(("bert.embeddings.", "bert.encoder.layer.0."))}
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("freeze:"))
    assert line.endswith(": bert.encoder.layer.1, bert.pooler, classifier"), line

    model, _ = tiny("bert")
    assert freeze(model, "freeze=all_but_head") == "bert.embeddings, bert.encoder"
    assert {n.rsplit(".", 2)[0] for n in trainable(model)} == {"bert.pooler", "classifier"}

    model, _ = tiny("bert")
    freeze(model, "freeze.patterns=['self.query.weight$','self.key.weight$']")  # quoted: Hydra's grammar
    assert {n for n in everything - trainable(model)} == {
        f"bert.encoder.layer.{i}.attention.self.{m}.weight" for i in (0, 1) for m in ("query", "key")}
    assert freeze(tiny("bert")[0], "freeze=none") is None


def test_freezing_applies_after_peft_to_the_adapter_weights_too() -> None:
    model, _ = wrap("bert", "peft=lora")
    before = trainable(model)
    assert freeze(model, "freeze=first_layers", "freeze.layers=1") == "bert.encoder.layer.0"
    after = trainable(model)
    assert before - after == {n for n in before if ".layer.0." in n} != set()
    assert {n for n in after if "lora_" in n} and all(".layer.1." in n for n in after if "lora_" in n)
    assert any("classifier.modules_to_save" in n for n in after)  # the head still trains


@pytest.mark.parametrize(("model", "embeddings", "layer0", "head"), [
    ("llama", {"model.embed_tokens.weight"}, "model.layers.0.", "lm_head.weight"),
    ("gpt2", {"transformer.wte.weight", "transformer.wpe.weight"}, "transformer.h.0.", "transformer.wte.weight"),
])
def test_language_models_find_their_embeddings_layers_and_head(model, embeddings, layer0, head) -> None:
    lm, _ = tiny(model)
    everything = trainable(lm)
    freeze(lm, "freeze=embeddings", "freeze.layers=1", head_modules=())
    assert everything - trainable(lm) == embeddings | {n for n in everything if n.startswith(layer0)}
    lm, _ = tiny(model)
    freeze(lm, "freeze=all_but_head", head_modules=())
    assert trainable(lm) == {head}  # GPT-2's head is tied to its input embeddings: that matrix trains


def test_bad_freeze_settings_fail_in_one_line() -> None:
    with pytest.raises(HfxError, match=r"freeze.layers: the model has 2 layers \(bert.encoder.layer.0-1\), got 3"):
        freeze(tiny("bert")[0], "freeze=first_layers", "freeze.layers=3")
    with pytest.raises(HfxError, match="freeze.patterns: 'decoder' matches no parameter name; they look like bert"):
        freeze(tiny("bert")[0], "freeze.patterns=[decoder]")
    with pytest.raises(HfxError, match="freeze: nothing is left to train"):
        freeze(tiny("bert")[0], "freeze=all_but_head", "freeze.patterns=[classifier, pooler]")
    for overrides, needle in ((["freeze.patterns=['(']"], r"freeze.patterns: '\(' is not a regular expression"),
                              (["freeze=first_layers", "freeze.layers=-1"], "freeze.layers: expected a number")):
        with pytest.raises(HfxError, match=needle):
            check_composed(compose("train", overrides))
    with pytest.raises(Exception, match="layerz"):
        compose("train", ["freeze.layerz=1"])


@pytest.mark.slow
def test_frozen_weights_leave_a_real_run_bit_identical(cache, tmp_path) -> None:
    """Full fine-tuning of the packaged MiniLM (cut to 2 layers) with its embeddings and first layer frozen: those
    tensors are saved exactly as pretrained, every tensor of the second layer moved."""
    from safetensors.torch import load_file

    from hfx.config.store import packaged_model

    run = tmp_path / "run"
    metrics = train_ok(run, "model=minilm", "+model.config.num_hidden_layers=2", "peft=none", "freeze=embeddings",
                       "freeze.layers=1", "trainer.learning_rate=1e-3", "trainer.max_steps=3",
                       "dataset.max_train_samples=96", "dataset.max_eval_samples=16", cache=cache)
    assert metrics["frozen"] == "bert.embeddings, bert.encoder.layer.0"
    assert 0 < metrics["parameters_trainable"] < metrics["parameters_total"]
    assert "freeze: bert.embeddings, bert.encoder.layer.0; trainable" in (run / "train.log").read_text()
    pretrained = load_file(f"{packaged_model('minilm')}/model.safetensors")
    saved = load_file(str(run / "model" / "model.safetensors"))
    frozen = [k for k in saved if k.startswith(("bert.embeddings.", "bert.encoder.layer.0."))]
    moved = [k for k in saved if k.startswith("bert.encoder.layer.1.")]
    assert len(frozen) > 10 and len(moved) > 10
    for key in frozen:
        assert saved[key].equal(pretrained[key.removeprefix("bert.")]), key
    for key in moved:
        assert not saved[key].equal(pretrained[key.removeprefix("bert.")]), key
    assert json.loads((run / "model" / "config.json").read_text())["num_hidden_layers"] == 2
