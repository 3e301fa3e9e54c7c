"""`hfx attention`: heatmaps and weights of a tiny encoder run and a tiny decoder (causal LM) run, through the real
CLI: images of the expected size, rows that sum to 1, the layers and heads asked for, causal maps for the decoder,
special tokens marked, and a layer out of range refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hfx.plots import attention_grid_pixels
from tests.conftest import TINY, assert_one_line_error, run_hfx, shared, train_ok

# Every test here works on a run trained through the CLI.
pytestmark = pytest.mark.slow

TEXT = "the soup was cold, wasn't it?"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, hfx_cache: Path) -> dict[str, Path]:
    """A tiny BERT classifier and a tiny GPT-2 causal LM (2 layers, 2 heads each), trained for a few steps."""
    root = tmp_path_factory.mktemp("attention")
    quick = ["trainer.max_steps=2", "trainer.save_strategy=no"]
    train_ok(root / "encoder", *TINY, *quick, "dataset.max_train_samples=64", "dataset.max_eval_samples=8",
             cache=hfx_cache)
    train_ok(root / "decoder", "task=causal_lm", "dataset=tiny_shakespeare",
             f"dataset.data_dir={shared('tiny_shakespeare')}", "model=tiny_gpt2", "peft=none", "tokenizer=bpe",
             "tokenizer.vocab_size=300", "task.block_size=32", "task.num_samples=1", "task.max_new_tokens=2",
             "dataset.max_train_samples=200", "dataset.max_eval_samples=40", "logger=none", *quick,
             cache=hfx_cache)
    return {"encoder": root / "encoder", "decoder": root / "decoder"}


def attention_ok(run: Path, out: Path, cache: Path, *args: str) -> tuple[dict, dict[str, np.ndarray]]:
    r = run_hfx("attention", f"run={run}", f"input={TEXT}", f"out={out}", *args, cache=cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"open  {out / 'index.html'}" in r.stdout
    info = json.loads((out / "attention.json").read_text())
    with np.load(out / "attention.npz") as npz:
        arrays = dict(npz)
    return info, arrays


def check_images(out: Path, info: dict, n_heads: int) -> None:
    """One PNG per layer, of the size the grid of `n_heads` heatmaps over these tokens has, shown by index.html."""
    from PIL import Image

    page = (out / "index.html").read_text()
    expected = attention_grid_pixels(n_heads, len(info["tokens"]))
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"layer_{i}.png" for i in info["layers"])
    for layer in info["layers"]:
        with Image.open(out / f"layer_{layer}.png") as image:
            assert image.format == "PNG" and image.size == expected
        assert (info["images"][str(layer)]["width"], info["images"][str(layer)]["height"]) == expected
        assert f'src="layer_{layer}.png"' in page


def test_encoder_maps_every_layer_and_head(runs: dict[str, Path], cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    info, arrays = attention_ok(runs["encoder"], out, cache)
    tokens = info["tokens"]
    assert info["layers"] == [0, 1] and info["heads"] == [0, 1] and info["source"] == "attentions"
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "soup" in tokens
    assert info["special"][0] and info["special"][-1] and not info["special"][tokens.index("soup")]
    assert '<span class="special">[CLS]</span>' in (out / "index.html").read_text()
    assert set(arrays) == {"input_ids", "layer_0", "layer_1"} and len(arrays["input_ids"]) == len(tokens)
    for layer in (0, 1):
        maps = arrays[f"layer_{layer}"]
        assert maps.shape == (2, len(tokens), len(tokens)) and (maps >= 0).all()
        np.testing.assert_allclose(maps.sum(axis=-1), 1.0, atol=1e-5)  # each query's weights: a distribution
        assert np.triu(maps, k=1).max() > 0.01  # an encoder attends forwards as well
    check_images(out, info, n_heads=2)


def test_decoder_maps_are_causal_and_keep_the_selection(runs: dict[str, Path], cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    info, arrays = attention_ok(runs["decoder"], out, cache, "layers=[1]", "heads=[0]")
    n = len(info["tokens"])
    assert info["layers"] == [1] and info["heads"] == [0] and n > 3
    assert set(arrays) == {"input_ids", "layer_1"}
    maps = arrays["layer_1"]
    assert maps.shape == (1, n, n)
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0, atol=1e-5)
    assert np.array_equal(maps, np.tril(maps))  # no token attends to a later one
    assert maps[0, 0, 0] == pytest.approx(1.0)  # the first token can only attend to itself
    check_images(out, info, n_heads=1)
    assert attention_grid_pixels(1, n)[0] < attention_grid_pixels(2, n)[0]


def test_a_layer_out_of_range_is_refused_in_one_line(runs: dict[str, Path], cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    r = run_hfx("attention", f"run={runs['encoder']}", f"input={TEXT}", f"out={out}", "layers=[0,2]", cache=cache)
    assert r.returncode == 2
    assert_one_line_error(r, "layers: layer 2 is out of range; the model has 2 layers (0-1)")
    assert not out.exists() and not list(tmp_path.iterdir())
