"""Multi-task ranking: ESMM tasks on events, shared-bottom / MMoE / PLE backbones, our EKTM modules, Adam or PUB.

See docs/training.md ("Multi-task ranking") and ``trainers.multitask.trainer``.
"""
