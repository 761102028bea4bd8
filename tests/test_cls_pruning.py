"""The [CLS]-only last layer computes the logits of the full classifier."""

import pytest
import torch
from conftest import bert_classifier

from compresskit.tasks.classification.cls_pruning import ClsOnlyClassifier, supports


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("layers", [1, 2])
def test_same_logits_as_the_full_model_with_padding_and_segments(attention, layers):
    model = bert_classifier(layers)
    model.set_attn_implementation(attention)
    ids = torch.randint(5, 50, (4, 12))
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[1, 7:] = 0
    mask[3, 3:] = 0
    segments = torch.zeros_like(ids)
    segments[:, 6:] = 1
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, token_type_ids=segments).logits
        got = ClsOnlyClassifier(model)(ids, mask, segments)
    assert got.shape == want.shape == (4, 3)
    assert torch.allclose(got, want, atol=1e-6)
    # the padded rows really are masked: changing a padded token changes nothing, a real one does
    ids2 = ids.clone()
    ids2[3, 5] = (ids2[3, 5] + 1) % 45 + 5
    ids2[0, 5] = (ids2[0, 5] + 1) % 45 + 5
    with torch.no_grad():
        again = ClsOnlyClassifier(model)(ids2, mask, segments)
    assert torch.allclose(again[3], got[3], atol=1e-6) and not torch.allclose(again[0], got[0], atol=1e-6)


def test_other_architectures_are_declined_with_a_reason():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    other = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=50, dim=32, n_layers=1, n_heads=2,
                                                                 hidden_dim=64))
    assert "not a BertForSequenceClassification" in supports(other)
    assert supports(bert_classifier()) is None
    with pytest.raises(ValueError, match="not possible"):
        ClsOnlyClassifier(other)
