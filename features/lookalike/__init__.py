"""The look-alike family for RAR: user vectors as of a cutoff and their top-k neighbours (HNSW or SimHash candidates).

``contracts`` holds the tables; ``kernels`` the vector, hashing and ranking functions
(docs/lookalike.md).
"""
from features.lookalike.contracts import LOOKALIKE_USERS, USER_VECTORS

__all__ = ["LOOKALIKE_USERS", "USER_VECTORS"]
