"""Text classification with an encoder (``--task text-classification``): the family compresskit started with.

- ``task``: the family's ``Task`` (what the core calls); ``options``: its flags and each stage's config;
  ``commands``: the stage commands (prepare-data, finetune-teacher, distill, export, quantize), ``predict`` and
  ``sweep``; ``report``: its report lines and sections, compare metrics and graph changes.
- ``data``: labelled texts from files, folders, ``datasets`` or BBC News, split and written to disk.
- ``models``: the embedded teacher, classification heads and their labels, students from teacher layers;
  ``training``: tokenised examples, the collator and the checkpoint rule on the Trainer engine.
- ``finetune``: a bare encoder fine-tuned on the labels (cached); ``distill`` with ``losses`` and ``objective``: soft
  targets at T (T²-scaled, α-mixed with labels) and hidden-state, attention and embedding terms;
  ``teacher_cache``: the teacher's outputs computed once and memory-mapped.
- ``export`` (every exporter × attention candidate, [CLS]-only last layer from ``cls_pruning``, SkipLayerNorm form
  from ``layer_norm``, the fastest verified graph kept), ``verify`` (logit and label parity) and ``quantize``
  (dynamic/static int8, fp16, int4, with the accuracy fallback); ``runtime``: ``OnnxClassifier``.
- ``bench`` with its worker ``bench_worker`` and ``workloads`` (batch × sequence cells), and ``baseline`` (TF-IDF
  + logistic regression, its own worker); ``sweep`` and ``sweep_report``: student × T × α with the α = 0 ablation.
"""
