"""ReLoop2 (Zhu et al., KDD'23): a slow base click model corrected at serving time by a fast error memory.

- :mod:`trainers.reloop.memory`: the LSH sketch (:class:`SketchMemory`), the ANN variant
  (:class:`KNNMemory`, faiss or NumPy brute force) and the compensation (:func:`compensate`);
- :mod:`trainers.reloop.models`: DIN and a click DeepFM as base models, their last hidden layer
  as the memory key;
- :mod:`trainers.reloop.stream`: the time-sliced streaming evaluation (predict a slice, then
  write its labels) and the incremental fine-tuning baseline.

The page is the "ReLoop2" section of ``docs/training.md``; results in ``docs/results.md``.
"""
from trainers.reloop.memory import KNNMemory, Readout, SketchMemory, compensate, faiss_available

__all__ = ["KNNMemory", "Readout", "SketchMemory", "compensate", "faiss_available"]
