"""Pipelines that transformers 5 no longer ships, registered under their names before `hfx predict` serves a run.
One module per pipeline family; they import transformers, so only commands that serve a model import them."""

from __future__ import annotations


def register(pipeline_name: str) -> None:
    """Make `transformers.pipeline(pipeline_name, ...)` work in this process (no-op for names transformers has)."""
    from hfx.pipelines import extractive_qa, seq2seq

    if pipeline_name == extractive_qa.PIPELINE_TASK:
        extractive_qa.register()
    elif pipeline_name in seq2seq.PIPELINES:
        seq2seq.register()
