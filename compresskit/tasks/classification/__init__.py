"""Text classification with an encoder (BERT family): the ``text-classification`` task family.
"""
