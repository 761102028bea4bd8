"""A BERT-family classifier whose last layer computes the [CLS] position only: same logits, less work.

Why this is exact: a sequence classifier reads only position 0 of the last layer (BERT's pooler takes
``hidden[:, 0]``). In that layer, position 0 needs the keys and values of every position but its own query,
attention output, feed-forward and layer norms only. Everything else the layer computes is thrown away by the
head. Per token, a layer costs about 12·d² multiply-adds (Q, K, V, O: 4·d², feed-forward: 8·d²); keeping only K
and V for the other tokens leaves 2·d². For a 2-layer student that removes about 40 % of the encoder's work, for
a 6-layer teacher about 14 %. The export's parity check on real validation inputs confirms the logits match.

Only ``BertForSequenceClassification`` (BERT, MiniLM and the students compresskit cuts from them) is handled;
for other architectures ``supports`` says no and the export keeps the full graph.
"""

from __future__ import annotations

from typing import Any

import torch


def supports(model: Any) -> str | None:
    """None when ``model`` can run with a [CLS]-only last layer, else why not (for the export record)."""
    if type(model).__name__ != "BertForSequenceClassification":
        return f"{type(model).__name__} is not a BertForSequenceClassification"
    config = model.config
    if config.is_decoder or getattr(config, "add_cross_attention", False):
        return "decoder or cross-attention layers"
    if getattr(model.bert, "pooler", None) is None:
        return "no pooler: the head does not read position 0 alone"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return "relative position embeddings change the attention scores"
    return None


def _cls_only_layer(layer: Any, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One BERT layer evaluated at position 0 only.

    Shapes: ``hidden`` ``(batch, seq, width)``; ``mask`` as transformers builds it for the layers, ``(batch, 1,
    seq, seq)`` additive or boolean, or None; returns ``(batch, 1, width)``, equal to ``layer(hidden, mask)[:, :1]``.
    """
    attn = layer.attention.self
    batch, seq, _ = hidden.shape
    head = attn.attention_head_size
    first = hidden[:, :1]
    q = attn.query(first).view(batch, 1, -1, head).transpose(1, 2)  # (batch, heads, 1, head)
    k = attn.key(hidden).view(batch, seq, -1, head).transpose(1, 2)  # (batch, heads, seq, head)
    v = attn.value(hidden).view(batch, seq, -1, head).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(2, 3)) * attn.scaling  # (batch, heads, 1, seq)
    if mask is not None:
        row = mask[:, :, :1, :]  # the mask row of position 0
        scores = (scores.masked_fill(~row, torch.finfo(scores.dtype).min) if row.dtype == torch.bool
                  else scores + row)
    context = torch.matmul(torch.softmax(scores, dim=-1), v)  # (batch, heads, 1, head)
    context = context.transpose(1, 2).reshape(batch, 1, -1)
    attended = layer.attention.output(context, first)  # dense, then LayerNorm with the residual
    return layer.output(layer.intermediate(attended), attended)


class ClsOnlyClassifier(torch.nn.Module):
    """Wraps a ``BertForSequenceClassification`` (sharing its weights) for export; returns the logits only."""

    def __init__(self, model: Any):
        super().__init__()
        why = supports(model)
        if why is not None:
            raise ValueError(f"[CLS]-only last layer not possible: {why}")
        self.model = model.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        bert = self.model.bert
        hidden = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        from transformers.masking_utils import create_bidirectional_mask

        # the mask exactly as BertModel builds it for the attention implementation in use: the traced pattern is
        # then the one ONNX Runtime's optimizer fuses into Attention operators (a hand-made mask is not fused)
        mask = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=attention_mask)
        layers = bert.encoder.layer
        for layer in layers[:-1]:
            hidden = layer(hidden, mask)
        hidden = _cls_only_layer(layers[-1], hidden, mask)
        return self.model.classifier(self.model.dropout(bert.pooler(hidden)))
