"""The peft group: every method on tiny real models built from config (a BERT classifier, Llama and GPT-2 language
models), the combinations refused, saving (merged, or an adapter beside its base) and loading back, generation from
prompt-learning models, and one run end to end through the CLI."""

from __future__ import annotations

import functools
import json
import logging

import pytest
import torch

from hfx.config.compose import check_composed, compose
from hfx.errors import HfxError
from tests.conftest import run_hfx, train_ok

METHODS = ("lora", "dora", "ia3", "loha", "prefix_tuning", "prompt_tuning")
# model -> (model_type and config, head class, peft task type, methods refused on it and why)
MODELS = {
    "bert": ("bert", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          num_labels=2), "AutoModelForSequenceClassification", "SEQ_CLS",
             {"prefix_tuning": "takes no past key values"}),
    "llama": ("llama", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                            intermediate_size=64), "AutoModelForCausalLM", "CAUSAL_LM", {}),
    "gpt2": ("gpt2", dict(n_embd=32, n_layer=2, n_head=2, n_inner=64), "AutoModelForCausalLM", "CAUSAL_LM",
             {"loha": "'transformer.h.0.attn.c_attn' is a Conv1D"}),
}
HEADS = ("pooler", "classifier", "score")  # sequence classification's task.head_modules


@functools.cache  # composed once per setting (apply_peft only reads it)
def peft_cfg(*overrides: str):
    return compose("train", list(overrides)).peft


def tiny(model: str, seed: int = 0):
    import transformers

    model_type, config, auto, task_type, _ = MODELS[model]
    transformers.set_seed(seed)
    cfg = transformers.AutoConfig.for_model(model_type, vocab_size=120, pad_token_id=0, bos_token_id=1,
                                            eos_token_id=2, **config)
    return getattr(transformers, auto).from_config(cfg), task_type


def wrap(model: str, *overrides: str, seed: int = 0):
    from hfx.adapters import apply_peft

    base, task_type = tiny(model, seed)
    heads = HEADS if task_type == "SEQ_CLS" else ()
    return apply_peft(base, peft_cfg(*overrides), [], task_type, heads), task_type


def batch(task_type: str) -> dict:
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 0, 0]])
    mask = (ids != 0).long()
    labels = torch.tensor([0, 1]) if task_type == "SEQ_CLS" else ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train_a_little(model) -> None:
    """Move every trainable weight, as a few training steps would (an adapter starts as the identity)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)


CASES = [(m, method) for m in MODELS for method in METHODS]


@pytest.mark.parametrize(("model", "method"), CASES, ids=[f"{m}-{x}" for m, x in CASES])
def test_each_method_wraps_and_trains_or_is_refused_in_one_line(model, method, caplog) -> None:
    refused = MODELS[model][4].get(method)
    if refused:
        with pytest.raises(HfxError, match=f"^(peft={method}|peft.target_modules): .*{refused}"):
            wrap(model, f"peft={method}")
        return
    with caplog.at_level(logging.INFO, logger="hfx"):
        wrapped, task_type = wrap(model, f"peft={method}")
    trainable, total = wrapped.get_nb_trainable_parameters()
    assert 0 < trainable < total / 2
    line = next(r.getMessage() for r in caplog.records if "trainable" in r.getMessage())
    assert f"trainable {trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters" in line
    names = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    marker = {"lora": "lora_A", "dora": "lora_magnitude_vector", "ia3": "ia3_l", "loha": "hada_w1_a",
              "prefix_tuning": "prompt_encoder", "prompt_tuning": "prompt_encoder"}[method]
    assert any(marker in n for n in names), sorted(names)[:8]
    if task_type == "SEQ_CLS":  # the new head trains in full (and is saved with any adapter)
        assert any("classifier.modules_to_save" in n for n in names) and "trained in full: bert.pooler,classifier;" in line
    loss = wrapped(**batch(task_type)).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for n, p in wrapped.named_parameters() if p.requires_grad and marker in n)


def test_default_targets_come_from_the_architecture_record() -> None:
    ia3, _ = wrap("bert", "peft=ia3")
    scaled = {n.split(".ia3_l")[0].split("layer.0.")[-1] for n, _ in ia3.named_parameters() if ".layer.0." in n
              and "ia3_l" in n}
    assert scaled == {"attention.self.key", "attention.self.value", "attention.output.dense", "output.dense"}
    assert ia3.peft_config["default"].feedforward_modules == {"output.dense"}
    lora, _ = wrap("llama", "peft=lora", "peft.use_dora=true")  # `use_dora` on lora is DoRA
    magnitudes = {n.split(".lora_magnitude_vector")[0].rsplit(".", 1)[-1] for n, _ in lora.named_parameters()
                  if "lora_magnitude_vector" in n}
    assert magnitudes == {"q_proj", "v_proj"}


def test_bad_settings_are_refused_in_one_line() -> None:
    for overrides, needle in ((["peft=loha", "peft.r=0"], "peft.r: expected a positive number"),
                              (["peft=prompt_tuning", "peft.init=text"], "peft.init: expected one of random"),
                              (["peft=prefix_tuning", "peft.num_virtual_tokens=0"], "peft.num_virtual_tokens"),
                              (["peft=dora", "peft.dropout=1.5"], "peft.dropout: expected a probability")):
        with pytest.raises(HfxError, match=needle):
            check_composed(compose("train", overrides))
    # Where hfx does not run prompt learning is known from the config alone: refused before any model is built.
    for overrides, needle in ((["task=masked_lm", "peft=prompt_tuning"], "not for the masked_lm task"),
                              (["task=summarization", "model=tiny_bart", "tokenizer=bpe", "peft=prefix_tuning"],
                               "causal language models .*, not for the seq2seq task"),
                              (["model=tiny_llama", "tokenizer=bpe", "peft=prompt_tuning"],
                               "not for the sequence_classification task with a decoder model")):
        with pytest.raises(HfxError, match=f"peft={overrides[-1][5:]}: hfx runs it for .*{needle}"):
            check_composed(compose("train", overrides))
    check_composed(compose("train", ["model=tiny_llama", "tokenizer=bpe", "task=causal_lm", "peft=prefix_tuning"]))
    with pytest.raises(HfxError, match="peft.feedforward_modules: 'output.dense' is not one of peft.target_modules"):
        wrap("bert", "peft=ia3", "peft.target_modules=[key,value]", "peft.feedforward_modules=[output.dense]")
    base, _ = tiny("bert")
    from hfx.adapters import apply_peft

    with pytest.raises(HfxError, match="peft=prompt_tuning: peft prepends virtual tokens only for the tasks it knows"):
        apply_peft(base, peft_cfg("peft=prompt_tuning"), [], None)  # masked LM has no peft task type
    for model, task_type in (("bert", "TOKEN_CLS"), ("llama", "SEQ_CLS")):  # shifted tokens; a decoder's last position
        with pytest.raises(HfxError, match="peft=prompt_tuning: hfx runs it for sequence classification with an enc"):
            apply_peft(tiny(model)[0], peft_cfg("peft=prompt_tuning"), [], task_type)


ROUND_TRIPS = [("bert", "peft=prompt_tuning"), ("bert", "peft.merge_on_save=false"),
               ("llama", "peft=prefix_tuning"), ("gpt2", "peft=ia3", "peft.merge_on_save=false")]


@pytest.mark.parametrize("case", ROUND_TRIPS, ids=["-".join(c) for c in ROUND_TRIPS])
def test_an_adapter_kept_separate_loads_back_to_the_same_outputs(case, tmp_path) -> None:
    """A model built from scratch: its base is saved beside the adapter (base/) and loaded from there."""
    from omegaconf import OmegaConf

    from hfx.adapters import merge_for_saving
    from hfx.saved_adapters import has_adapter, load_adapter

    model, *overrides = case
    wrapped, task_type = wrap(model, *overrides)
    train_a_little(wrapped)
    wrapped.eval()
    with torch.no_grad():
        before = wrapped(**batch(task_type)).logits
    merge_for_saving(wrapped, peft_cfg(*overrides)).save_pretrained(str(tmp_path))
    assert has_adapter(tmp_path) and (tmp_path / "base" / "model.safetensors").is_file()
    import transformers

    auto = getattr(transformers, MODELS[model][2])
    mcfg = OmegaConf.create({"name_or_path": None, "revision": None, "trust_remote_code": False})
    loaded = load_adapter(auto, tmp_path, mcfg)
    with torch.no_grad():
        after = loaded(**batch(task_type)).logits
    assert torch.equal(before, after)


@pytest.mark.parametrize("method", ["dora", "ia3", "loha"])
def test_methods_that_merge_are_saved_merged(method, tmp_path) -> None:
    import transformers

    from hfx.adapters import merge_for_saving

    wrapped, task_type = wrap("bert", f"peft={method}")
    train_a_little(wrapped)
    wrapped.eval()
    with torch.no_grad():
        before = wrapped(**batch(task_type)).logits
    merge_for_saving(wrapped, peft_cfg(f"peft={method}")).save_pretrained(str(tmp_path))
    assert not (tmp_path / "adapter_config.json").exists()
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    assert not any(k in n for n, _ in loaded.named_parameters() for k in ("lora_", "ia3_", "hada_"))
    with torch.no_grad():
        assert torch.allclose(before, loaded(**batch(task_type)).logits, atol=1e-5)


@pytest.mark.parametrize("model", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["prefix_tuning", "prompt_tuning"])
def test_prompt_learning_models_generate_what_their_forward_predicts(model, method) -> None:
    """generate() (as `hfx predict` and the causal-LM samples call it) continues as greedy steps of the model's own
    forward would, left-padded rows as alone."""
    wrapped, _ = wrap(model, f"peft={method}", "peft.num_virtual_tokens=4")
    train_a_little(wrapped)
    wrapped.eval()
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])
    mask = (ids != 0).long()
    with torch.no_grad():
        out = wrapped.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                               eos_token_id=None, pad_token_id=0)
        for row, cur in enumerate((ids[:1, 2:], ids[1:])):  # each row alone, unpadded
            for _ in range(5):
                step = wrapped(input_ids=cur, attention_mask=torch.ones_like(cur)).logits[:, -1].argmax(-1)
                cur = torch.cat([cur, step[:, None]], 1)
            assert out[row, 6:].tolist() == cur[0, -5:].tolist(), (row, out.tolist(), cur.tolist())


def test_dry_run_builds_every_method_on_the_meta_device() -> None:
    import transformers

    from hfx.adapters import apply_peft

    for model, methods in (("bert", ("dora", "loha", "ia3", "prompt_tuning")), ("llama", ("prefix_tuning",))):
        model_type, config, auto, task_type, _ = MODELS[model]
        cfg = transformers.AutoConfig.for_model(model_type, vocab_size=120, **config)
        for method in methods:
            with torch.device("meta"):
                base = getattr(transformers, auto).from_config(cfg)
            wrapped = apply_peft(base, peft_cfg(f"peft={method}"), [], task_type)
            assert 0 < wrapped.get_nb_trainable_parameters()[0]


@pytest.mark.extended  # about 25-30 s; out of CI, which measured 19:28 with it
def test_prompt_tuned_minilm_is_served_and_evaluated_as_it_ended_training(cache, tmp_path) -> None:
    """Pretrained base: the run saves the adapter (prompts, pooler, classifier) and refers to the base; predict and
    evaluate load both and give the run's own predictions and loss."""
    run = tmp_path / "run"
    metrics = train_ok(run, "model=minilm", "+model.config.num_hidden_layers=2", "peft=prompt_tuning",
                       "peft.num_virtual_tokens=8", "trainer.learning_rate=3e-2", "trainer.max_steps=4",
                       "trainer.bf16=false", "dataset.max_train_samples=128", "dataset.max_eval_samples=24",
                       cache=cache)
    assert metrics["parameters_trainable"] < metrics["parameters_total"] / 20
    assert metrics["parameters_trainable_percent"] == pytest.approx(
        100 * metrics["parameters_trainable"] / metrics["parameters_total"], abs=1e-3)
    model_dir = run / "model"
    assert (model_dir / "adapter_model.safetensors").is_file() and not (model_dir / "base").exists()
    assert not (model_dir / "model.safetensors").exists()
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]

    from hfx.commands.predict import predict

    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": r["input"]}) + "\n" for r in rows))
    served = predict(compose("predict", [f"run={run}", f"input_file={texts}"]), tmp_path / "predict")
    assert [s["prediction"][0]["label"] for s in served] == [r["prediction"] for r in rows]

    r = run_hfx("evaluate", f"run={run}", cache=cache)
    assert r.returncode == 0, r.stderr[-3000:]
    (evaluated,) = list((run / "evaluate").iterdir())
    again = json.loads((evaluated / "metrics.json").read_text())
    assert again["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-6)
    assert again["eval_accuracy"] == metrics["eval_accuracy"]
