"""The `question-answering` pipeline for `hfx predict` on a question_answering run: transformers 5 removed its
extractive QA pipeline (it points to chat models instead); this one puts it back on the same windowing and span
selection as hfx's evaluation."""

from __future__ import annotations

import math
from typing import Any

from transformers import AutoModelForQuestionAnswering, Pipeline

from hfx.tasks.question_answering import PIPELINE_TASK, best_span, encode_windows, window_features


class ExtractiveQuestionAnsweringPipeline(Pipeline):
    """{question, context} -> {answer, score, start, end}: the best span over the context's windows."""

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __call__(
        self, inputs: Any = None, question: str | None = None, context: str | None = None, **kwargs: Any
    ) -> Any:
        if inputs is None:
            inputs = {"question": question, "context": context}
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self,
        max_seq_len: int | None = None,
        doc_stride: int | None = None,
        max_answer_len: int | None = None,
        n_best: int | None = None,
        **kwargs: Any,
    ) -> Any:
        pre = {
            k: v for k, v in {"max_seq_len": max_seq_len, "doc_stride": doc_stride}.items() if v is not None
        }
        post = {
            k: v for k, v in {"max_answer_len": max_answer_len, "n_best": n_best}.items() if v is not None
        }
        return pre, {}, post

    def preprocess(
        self, inputs: Any, max_seq_len: int | None = None, doc_stride: int = 128
    ) -> dict[str, Any]:
        import torch

        if not isinstance(inputs, dict) or not {"question", "context"} <= set(inputs):
            raise ValueError("question-answering input must be {'question': ..., 'context': ...}")
        max_len = max_seq_len or min(self.tokenizer.model_max_length, 384)
        stride = min(doc_stride, max_len // 2 - 1)
        enc = encode_windows(
            self.tokenizer, [inputs["question"]], [inputs["context"]], max_len, stride, padding=True
        )
        pad_on_right = self.tokenizer.padding_side == "right"
        windows = window_features(enc, None, pad_on_right, self.tokenizer.cls_token_id)
        tensors = {
            k: torch.tensor(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc
        }
        return {**tensors, "offsets": windows["offset_mapping"], "context": inputs["context"]}

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        offsets, context = model_inputs.pop("offsets"), model_inputs.pop("context")
        out = self.model(**model_inputs)
        return {
            "start_logits": out.start_logits,
            "end_logits": out.end_logits,
            "offsets": offsets,
            "context": context,
        }

    def postprocess(
        self, outputs: dict[str, Any], max_answer_len: int = 30, n_best: int = 20
    ) -> dict[str, Any]:
        start = outputs["start_logits"].float().log_softmax(-1).numpy()
        end = outputs["end_logits"].float().log_softmax(-1).numpy()
        best = None
        for f, offsets in enumerate(outputs["offsets"]):
            span = best_span(start[f], end[f], offsets, n_best, max_answer_len)
            if span is not None and (best is None or span[0] > best[0]):
                best = span
        if best is None:
            return {"answer": "", "score": 0.0, "start": 0, "end": 0}
        score, s, e = best
        return {"answer": outputs["context"][s:e], "score": math.exp(score), "start": s, "end": e}


def register() -> None:
    """Make `transformers.pipeline("question-answering", ...)` work again in this process."""
    from transformers.pipelines import PIPELINE_REGISTRY, REMOVED_TASKS

    REMOVED_TASKS.pop(PIPELINE_TASK, None)
    impl = PIPELINE_REGISTRY.supported_tasks.get(PIPELINE_TASK, {}).get("impl")
    if impl is not ExtractiveQuestionAnsweringPipeline:
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASK,
            pipeline_class=ExtractiveQuestionAnsweringPipeline,
            pt_model=AutoModelForQuestionAnswering,
            type="text",
        )
