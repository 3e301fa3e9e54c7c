"""The `hfx-summarization` / `hfx-translation` pipelines for `hfx predict` on a seq2seq run: transformers 5
removed its summarization and translation pipelines; these give the outputs transformers 4 did."""

from __future__ import annotations

import functools
from typing import Any

from transformers import AutoModelForSeq2SeqLM, Pipeline


class Seq2SeqGenerationPipeline(Pipeline):
    """Text in, generated text out; generation settings come from the model's generation_config.json."""

    _pipeline_calls_generate = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True
    output_key = "generated_text"

    def _sanitize_parameters(self, truncation: bool | None = None, **generate_kwargs: Any) -> tuple:
        pre = {} if truncation is None else {"truncation": truncation}
        return pre, generate_kwargs, {}

    def preprocess(self, text: str, truncation: bool = True) -> Any:
        return self.tokenizer((self.prefix or "") + text, return_tensors="pt", truncation=truncation)

    def _forward(self, model_inputs: Any, **generate_kwargs: Any) -> Any:
        kwargs = self._prepare_generate_kwargs(generate_kwargs)
        return {"output_ids": self.model.generate(**model_inputs, **kwargs)}

    def postprocess(self, model_outputs: Any) -> list[dict[str, str]]:
        texts = self.tokenizer.batch_decode(model_outputs["output_ids"], skip_special_tokens=True)
        return [{self.output_key: t.strip()} for t in texts]


class SummarizationPipeline(Seq2SeqGenerationPipeline):
    output_key = "summary_text"


class TranslationPipeline(Seq2SeqGenerationPipeline):
    output_key = "translation_text"


# The names the seq2seq task saves as a run's pipeline (its FLAVOURS, by task.metric).
PIPELINES: dict[str, type[Seq2SeqGenerationPipeline]] = {
    "hfx-summarization": SummarizationPipeline,
    "hfx-translation": TranslationPipeline,
}


@functools.cache
def register() -> None:
    """Make `transformers.pipeline("hfx-summarization" / "hfx-translation", ...)` work in this process."""
    from transformers.pipelines import PIPELINE_REGISTRY

    for name, cls in PIPELINES.items():
        PIPELINE_REGISTRY.register_pipeline(
            name, pipeline_class=cls, pt_model=AutoModelForSeq2SeqLM, type="text"
        )
