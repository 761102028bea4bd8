"""Run an exported classifier folder with ONNX Runtime alone: no torch, no transformers.

    from compresskit.runtime import OnnxClassifier
    clf = OnnxClassifier("export/bbc-news-all-minilm-l6-v2/onnx/student-quantized")
    clf.predict(["Shares in the bank rose 5% after results."])  # [{"label": "business", "score": 0.98, ...}]

The documented public entry point; the implementation is the text-classification family's
(``compresskit.tasks.classification.runtime``). An exported causal LM is answered with ``compresskit generate``
(``compresskit.tasks.causal_lm.onnx_generate``).
"""

from compresskit.tasks.classification.runtime import OnnxClassifier

__all__ = ["OnnxClassifier"]
