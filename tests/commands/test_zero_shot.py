"""Zero-shot classification without a run (hfx/zero_shot.py): `hfx predict` and `hfx evaluate` on the packaged
MiniLM (real pretrained weights: topics it must rank right; cosines as sentence-transformers computes them), the
NLI method on a tiny NLI-shaped model built from a config (scores as its entailment logits give them), label
texts from the template or descriptions, and an evaluation whose metrics agree with its own predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hfx.errors import HfxError
from tests.conftest import run_hfx

TOPICS = {
    "The striker scored twice in the cup final.": "sports",
    "Shares fell sharply after the bank's quarterly earnings report.": "business",
    "Astronomers discovered a new planet orbiting a nearby star.": "science",
}
CANDIDATES = ["business", "politics", "science", "sports"]  # politics: a label no text is about
# Sentences any sentiment reader gets right, as an SST-2 folder (sentence, label 0 = negative / 1 = positive).
REVIEWS = [
    ("a wonderful, moving film with superb acting", 1),
    ("one of the best films of the year", 1),
    ("a delightful and charming comedy", 1),
    ("an awful, boring mess of a movie", 0),
    ("the worst film i have ever seen", 0),
    ("dull, tedious and badly acted", 0),
    ("a joy to watch", 1),
]


def config(command: str, *overrides: str):
    from hfx import zero_shot
    from hfx.config.compose import compose

    return compose(command, zero_shot.command_args(list(overrides)))


def sst2_folder(path: Path) -> Path:
    """A folder laid out as SST-2 offline: train.csv (not read here) and validation.csv of REVIEWS."""
    path.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        with (path / f"{split}.csv").open("w", newline="") as f:
            csv.writer(f).writerows([("sentence", "label"), *REVIEWS])
    return path


@pytest.fixture(scope="module")
def nli_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT with an NLI head (labels contradiction / neutral / entailment, as MNLI models name them),
    random weights spread wide enough that the labels' scores differ, and MiniLM's tokenizer: what the
    zero-shot-classification pipeline needs from a hub NLI model."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from hfx.config.store import packaged_model

    path = tmp_path_factory.mktemp("nli") / "model"
    tokenizer = AutoTokenizer.from_pretrained(packaged_model("minilm"))
    labels = ["contradiction", "neutral", "entailment"]
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            initializer_range=0.5,
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow
def test_predict_ranks_the_labels_with_no_run(tmp_path: Path, cache: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"{t}\n" for t in TOPICS))
    r = run_hfx(
        "predict",
        "model=minilm",
        f"candidate_labels=[{','.join(CANDIDATES)}]",
        f"input_file={texts}",
        cache=cache,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [row["input"]["text"] for row in rows] == list(TOPICS)
    for row in rows:
        ranked = row["prediction"]
        assert sorted(p["label"] for p in ranked) == CANDIDATES
        assert [p["score"] for p in ranked] == sorted((p["score"] for p in ranked), reverse=True)
        assert ranked[0]["label"] == TOPICS[row["input"]["text"]], ranked
    # No run dir: the log and predictions.jsonl go to zero_shot/<timestamp>/ of the working directory.
    (out,) = (tmp_path / "zero_shot").iterdir()
    assert [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()] == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt", "zero_shot"]


@pytest.mark.slow
def test_embedding_scores_are_sentence_transformers_cosines() -> None:
    """MiniLM's sentence embeddings (its own pooling and normalisation) as sentence-transformers computes them;
    a described label is compared through its description."""
    from hfx import zero_shot

    cfg = config(
        "predict",
        "model=minilm",
        "candidate_labels=[sports,science]",
        "input=x",
        "label_descriptions={sports: 'football, tennis, or the Olympics'}",
    )
    texts = zero_shot.label_texts(cfg, ["sports", "science"])
    assert texts == ["football, tennis, or the Olympics", "This example is science."]
    assert zero_shot.method_for(cfg) == "embedding"
    classify = zero_shot.load_classifier(cfg, "embedding", texts, {})
    scores = classify(list(TOPICS))
    assert (
        scores[0][0] > scores[0][1] and scores[2][1] > scores[2][0]
    )  # the striker: sports; the planet: science

    import numpy as np

    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(cfg.model.name_or_path, device="cpu")
    want = (
        model.encode(list(TOPICS), normalize_embeddings=True)
        @ model.encode(texts, normalize_embeddings=True).T
    )
    np.testing.assert_allclose(np.array(scores), want, atol=1e-5)


def test_nli_scores_are_the_entailment_softmax(nli_model: Path) -> None:
    """An NLI model is served by the zero-shot-classification pipeline: each label's hypothesis (template or
    description) scored by the entailment logit, softmax over the candidates."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hfx import zero_shot

    cfg = config(
        "predict",
        f"model.name_or_path={nli_model}",
        "candidate_labels=[sports,business,science]",
        "input=x",
        "hypothesis_template=This text is about {}.",
        "label_descriptions.science=a discovery in physics or astronomy",
    )
    assert zero_shot.method_for(cfg) == "nli"
    hypotheses = zero_shot.label_texts(cfg, ["sports", "business", "science"])
    assert hypotheses == [
        "This text is about sports.",
        "This text is about business.",
        "a discovery in physics or astronomy",
    ]
    scores = zero_shot.load_classifier(cfg, "nli", hypotheses, {})(list(TOPICS))

    tokenizer = AutoTokenizer.from_pretrained(nli_model)
    model = AutoModelForSequenceClassification.from_pretrained(nli_model).eval()
    for text, row in zip(TOPICS, scores, strict=True):
        with torch.no_grad():
            logits = torch.cat([model(**tokenizer(text, h, return_tensors="pt")).logits for h in hypotheses])
        want = logits[:, model.config.label2id["entailment"]].softmax(dim=0)
        assert row == pytest.approx(want.tolist(), abs=1e-5)
        assert max(row) - min(row) > 0.01  # the labels really differ: the comparison says something

    forced = config("predict", "model=minilm", "candidate_labels=[a,b]", "input=x", "zero_shot_method=nli")
    with pytest.raises(HfxError, match="zero_shot_method: nli needs an NLI model .* has labels LABEL_0"):
        zero_shot.method_for(forced)


def test_label_texts_are_checked() -> None:
    from hfx import zero_shot

    cases = {
        ("candidate_labels=[]",): "candidate_labels: expected at least one label",
        ("candidate_labels=[a,a]",): "candidate_labels: 'a' is given twice",
        (
            "candidate_labels=[a,b]",
            "hypothesis_template=about",
        ): r"hypothesis_template: expected text with one \{\}",
        ("candidate_labels=[a,b]", "label_descriptions.c=x"): "label_descriptions.c: not a candidate label",
        ("candidate_labels=[a,b]", "label_descriptions={a: x, b: x}"): "two labels have the same text 'x'",
    }
    for overrides, message in cases.items():
        cfg = config("predict", "model=minilm", "input=x", *overrides)
        with pytest.raises(HfxError, match=message):
            zero_shot.label_texts(cfg, zero_shot.predict_candidates(cfg))


def test_evaluation_rows_name_their_labels(tmp_path: Path) -> None:
    """Integer labels take dataset.label_names (or candidate_labels, in order); every label of the data must be a
    candidate, and extra candidates are allowed."""
    from hfx import zero_shot

    data = sst2_folder(tmp_path) / "validation.csv"
    sst2 = ["model=minilm", "zero_shot=true", "dataset=sst2", f"++dataset.data_dir={data.parent}"]
    rows = zero_shot.evaluation_rows(config("evaluate", *sst2))
    assert rows.candidates == ["negative", "positive"]
    assert rows.references == [["negative", "positive"][label] for _, label in REVIEWS]
    assert rows.texts == [text for text, _ in REVIEWS]
    named = config(
        "evaluate",
        "model=minilm",
        "candidate_labels=[bad,good,so-so]",
        "++dataset.path=csv",
        f"++dataset.data_files.validation={data}",
        "++dataset.columns.text=sentence",
    )
    assert set(zero_shot.evaluation_rows(named).references) == {"bad", "good"}
    short = config("evaluate", *sst2, "candidate_labels=[positive,neutral]")
    with pytest.raises(HfxError, match=r"the data's label\(s\) negative are not among the candidates"):
        zero_shot.evaluation_rows(short)


@pytest.mark.slow
def test_evaluate_scores_a_dataset_option_against_the_majority_baseline(tmp_path: Path, cache: Path) -> None:
    from sklearn.metrics import accuracy_score, f1_score

    data = sst2_folder(tmp_path / "sst2")
    r = run_hfx(
        "evaluate",
        "model=minilm",
        "zero_shot=true",
        "dataset=sst2",
        f"dataset.data_dir={data}",
        # Described alike (a description beside a bare template tilts the scores towards it).
        "label_descriptions.positive=a great, enjoyable film",
        "label_descriptions.negative=a terrible, boring film",
        cache=cache,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (out,) = (tmp_path / "zero_shot").iterdir()
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [row["input"] for row in rows] == [text for text, _ in REVIEWS]
    refs, preds = [row["reference"] for row in rows], [row["prediction"] for row in rows]
    assert refs == [["negative", "positive"][label] for _, label in REVIEWS]
    assert all(row["prediction"] == max(row["scores"], key=row["scores"].get) for row in rows)
    assert metrics["eval_accuracy"] == pytest.approx(accuracy_score(refs, preds))
    assert metrics["eval_f1_macro"] == pytest.approx(f1_score(refs, preds, average="macro"))
    assert metrics["majority_label"] == "positive" and metrics["eval_majority_accuracy"] == pytest.approx(
        4 / 7
    )
    assert metrics["eval_majority_f1_macro"] == pytest.approx(
        f1_score(refs, ["positive"] * 7, average="macro")
    )
    assert metrics["eval_samples"] == 7 and metrics["zero_shot_method"] == "embedding"
    assert metrics["eval_accuracy"] > metrics["eval_majority_accuracy"]
    saved = (out / "config.yaml").read_text()
    assert "positive: a great, enjoyable film" in saved and "text: sentence" in saved
    assert "negative: a terrible, boring film" in saved
    assert "eval_majority_accuracy  0.5714" in r.stdout


@pytest.mark.parametrize(("command", "served"), [("predict", "served"), ("evaluate", "evaluated")])
def test_a_model_beside_a_run_is_one_line(command: str, served: str, tmp_path: Path, cache: Path) -> None:
    r = run_hfx(command, f"run={tmp_path}", "model=minilm", *(["input=hi"] if command == "predict" else []),
                cache=cache, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: model: a run is {served} with its own model") and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
