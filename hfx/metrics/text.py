"""Generated-text scores: ROUGE for summaries, sacrebleu BLEU for translations, both 0-100."""

from __future__ import annotations


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (rouge-score, Porter stemming), 0-100."""
    from rouge_score import rouge_scorer

    keys = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
    totals = dict.fromkeys(keys, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)
        for k in keys:
            totals[k] += scores[k].fmeasure
    n = max(len(predictions), 1)
    return {k: 100 * v / n for k, v in totals.items()}


def bleu(predictions: list[str], references: list[str]) -> dict[str, float]:
    """sacrebleu corpus BLEU (13a tokenization, one reference), 0-100."""
    import sacrebleu

    return {"bleu": float(sacrebleu.corpus_bleu(predictions, [references]).score)}


def text_metrics(metric: str, predictions: list[str], references: list[str]) -> dict[str, float]:
    """`metric` is rouge or bleu (a seq2seq run's task.metric)."""
    return rouge(predictions, references) if metric == "rouge" else bleu(predictions, references)
