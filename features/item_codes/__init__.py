"""The item_codes family: semantic IDs of items for generative recommendation (docs/fair.md).

``contracts`` holds the table; ``embedding`` the item embeddings (co-occurrence, content);
``quantize`` residual k-means, the disambiguation token and the codebook digest.
"""
from features.item_codes.contracts import EMBEDDINGS, ITEM_CODES

__all__ = ["EMBEDDINGS", "ITEM_CODES"]
