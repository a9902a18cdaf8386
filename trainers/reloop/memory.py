"""ReLoop2's error memory: an LSH sketch of running sums, and the ANN (k-nearest-neighbour) variant.

Both memories store, per newly labelled sample, what the base model saw (its key ``h``, the
last hidden layer), the label ``y`` and the base prediction ``y_base``; both answer a read with a
:class:`Readout`: the neighbourhood's label mean ``ȳ``, its base-prediction mean ``ȳ_base`` and
the evidence behind them (``weight``: 0 when nothing was found, and then the compensation is 0).

**Sketch** (:class:`SketchMemory`, the paper's proposed option, in the style of RACE): ``K``
arrays of ``2^L`` buckets. Array ``k`` hashes a key with ``L`` sign-random-projection bits
(``bit_l = [⟨h − c, r_kl⟩ > 0]``, ``r_kl ~ N(0, I)``, ``c`` an optional centre, e.g. the mean key
of the training rows: the last hidden layer after a ReLU is non-negative, and centring spreads
its signs), giving one bucket. Each bucket keeps three running sums: count, Σy and Σy_base. A
write adds a sample into its bucket of every array, a read looks up the query's bucket in every
array: ``O(K·L·d)`` for the hash and ``O(K)`` for the sums per sample, whatever was written
before. The memory holds ``K · 2^L · 3`` float64 numbers whatever the number of samples.

Read: array ``k`` gives the bucket means ``ȳ_k = Σy/count``, ``ȳ_base,k = Σy_base/count`` (the
spec's "K readouts standing in for K neighbours"). The spec leaves how the similarities ``s_k``
come from the sketch open; ours: ``s_k = log count_k`` (the bucket count is RACE's kernel density
estimate), attention ``a = softmax(s / τ)`` over the non-empty arrays, so ``a_k ∝ count_k^(1/τ)``.
With ``τ = 1`` (our default) ``ȳ = Σ_k Σy_k / Σ_k count_k``, the pooled mean of the query's
buckets. ``weight`` is the mean count per array.

**ANN** (:class:`KNNMemory`, the spec's other option, the official code's choice): the raw keys
(L2-normalised, so inner product = cosine) with their label and base prediction in arrays
aligned with the index's ids; a read takes the ``k`` most similar stored keys, ``a =
softmax(cosine / τ)`` (``τ = 0.1``, the paper's value), ``ȳ = Σ a_i y_i``. The labels are looked
up by the *cumulative* id the index returns; the official MindSpore code looks them up in the
current shard's label array, which gives wrong labels once the index holds more than one shard.
Search backend: faiss (``IndexFlatIP``, exact; ``nlist`` > 0 for ``IndexIVFFlat``, trained on the
first write of at least ``39 · nlist`` keys) when installed, else exact brute force in NumPy
(the same neighbours up to ties). Optional ``error_threshold``: store only samples with
``|y − y_base| ≥ threshold`` (the spec's "only samples whose error exceeds σ").

**Reset and age.** ``reset()`` empties either memory; the streaming evaluator calls it when
the base model changes (a retrain: the stored predictions and keys belong to the old model) and,
with ``reset_every``, every that many slices. The sketch can also age by ``decay(factor)``: every
sum multiplied by ``factor`` (a half-life of ``h`` slices is ``factor = 0.5 ** (1 / h)``), which
leaves every bucket mean unchanged and only shifts the attention towards recent buckets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Readout:
    """Per query: neighbour label mean ``label`` (ȳ), base-prediction mean ``base`` (ȳ_base) and
    ``weight`` (evidence; 0: nothing found, ``label`` and ``base`` are then 0)."""

    label: np.ndarray
    base: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @staticmethod
    def empty(n: int) -> "Readout":
        return Readout(np.zeros(n), np.zeros(n), np.zeros(n))

    @staticmethod
    def concat(parts: list["Readout"]) -> "Readout":
        if not parts:
            return Readout.empty(0)
        return Readout(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("label", "base", "weight")))


def compensate(base: np.ndarray, readout: Readout, lam: float, gamma: float = 1.0) -> np.ndarray:
    """``clip(y_base + λ · err, 0, 1)`` with ``err = γ (ȳ − y_base) + (1 − γ)(ȳ − ȳ_base)``.

    ``γ = 1`` compares the neighbours' labels with the current prediction (the paper's
    experiments), ``γ = 0`` with the neighbours' own base predictions (the spec's reading of
    Eq. 13). A query with no neighbour (``weight == 0``) keeps its base prediction.
    """
    base = np.asarray(base, np.float64)
    err = gamma * (readout.label - base) + (1.0 - gamma) * (readout.label - readout.base)
    err = np.where(readout.weight > 0, err, 0.0)
    return np.clip(base + lam * err, 0.0, 1.0)


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64) if not torch.is_tensor(x) else x).double()


class SketchMemory:
    """The LSH sketch: ``arrays`` (K) × ``2^bits`` (L) buckets of (count, Σy, Σy_base), float64."""

    COUNT, LABEL, BASE = 0, 1, 2

    def __init__(self, dim: int, arrays: int = 32, bits: int = 12, tau: float = 1.0, seed: int = 0,
                 center: np.ndarray | None = None):
        if dim < 1 or arrays < 1 or not 1 <= bits <= 30:
            raise ValueError(f"need dim >= 1, arrays >= 1 and 1 <= bits <= 30, got {dim}, {arrays}, {bits}")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.dim, self.arrays, self.bits, self.tau = dim, arrays, bits, tau
        gen = torch.Generator().manual_seed(int(seed))
        self.planes = torch.randn(dim, arrays * bits, generator=gen, dtype=torch.float64)
        self.center = None if center is None else _as_tensor(center).reshape(dim)
        self._powers = (2 ** torch.arange(bits, dtype=torch.int64))
        self._offsets = torch.arange(arrays, dtype=torch.int64) * (2**bits)
        self.sums = torch.zeros(arrays * 2**bits, 3, dtype=torch.float64)
        self.written = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the sums (the memory proper; the projection planes add ``dim·K·L·8``)."""
        return self.sums.element_size() * self.sums.nelement()

    @property
    def planes_nbytes(self) -> int:
        return self.planes.element_size() * self.planes.nelement()

    def buckets(self, keys) -> np.ndarray:
        """Bucket index of each key in each array, ``int64 [n, K]`` in ``[0, 2^L)``."""
        return (self._flat(keys) - self._offsets).numpy()

    def _flat(self, keys) -> torch.Tensor:
        h = _as_tensor(keys).reshape(-1, self.dim)
        if self.center is not None:
            h = h - self.center
        bits = (h @ self.planes > 0).reshape(-1, self.arrays, self.bits).to(torch.int64)
        return (bits * self._powers).sum(-1) + self._offsets  # [n, K], index into the flat sums

    def write(self, keys, labels, base) -> None:
        """Add every sample into its bucket of every array."""
        idx = self._flat(keys)
        n = idx.shape[0]
        if n == 0:
            return
        vals = torch.stack([torch.ones(n, dtype=torch.float64), _as_tensor(labels).reshape(n),
                            _as_tensor(base).reshape(n)], dim=1)
        self.sums.index_add_(0, idx.reshape(-1), vals.repeat_interleave(self.arrays, dim=0))
        self.written += n

    def read(self, keys) -> Readout:
        idx = self._flat(keys)
        got = self.sums[idx.reshape(-1)].reshape(idx.shape[0], self.arrays, 3)
        count, ysum, psum = got[..., 0], got[..., 1], got[..., 2]
        filled = count > 0
        if self.tau == 1.0:  # a_k ∝ count_k: the pooled mean of the query's buckets
            total = count.sum(1)
            safe = torch.where(total > 0, total, torch.ones_like(total))
            label, base = ysum.sum(1) / safe, psum.sum(1) / safe
        else:
            s = torch.where(filled, torch.log(torch.where(filled, count, torch.ones_like(count))) / self.tau,
                            torch.full_like(count, -math.inf))
            a = torch.softmax(s, dim=1).nan_to_num(0.0)  # a row of empty arrays: all weights 0
            safe = torch.where(filled, count, torch.ones_like(count))
            label, base = (a * ysum / safe).sum(1), (a * psum / safe).sum(1)
        weight = count.sum(1) / self.arrays
        return Readout(label.numpy(), base.numpy(), weight.numpy())

    def reset(self) -> None:
        self.sums.zero_()
        self.written = 0

    def decay(self, factor: float) -> None:
        """Multiply every running sum by ``factor`` in (0, 1]: old samples weigh less, means unchanged."""
        if not 0 < factor <= 1:
            raise ValueError(f"decay factor must be in (0, 1], got {factor}")
        if factor < 1:
            self.sums.mul_(factor)


class KNNMemory:
    """The ANN variant: stored keys (L2-normalised), labels and base predictions, k-NN reads."""

    def __init__(self, dim: int, k: int = 16, tau: float = 0.1, backend: str = "auto", nlist: int = 0,
                 error_threshold: float = 0.0, nprobe: int = 8):
        if backend not in ("auto", "faiss", "numpy"):
            raise ValueError(f"backend must be auto, faiss or numpy, got {backend!r}")
        if backend == "faiss" and not faiss_available():
            raise ImportError("the faiss backend needs faiss (pip install faiss-cpu)")
        if k < 1 or tau <= 0:
            raise ValueError(f"need k >= 1 and tau > 0, got {k}, {tau}")
        self.dim, self.k, self.tau, self.nlist, self.nprobe = dim, k, tau, nlist, nprobe
        self.error_threshold = error_threshold
        self.backend = ("faiss" if faiss_available() else "numpy") if backend == "auto" else backend
        self.reset()

    def reset(self) -> None:
        self._keys = np.zeros((0, self.dim), np.float32)
        self._labels = np.zeros(0, np.float64)  # row i <-> index id i (cumulative, never per shard)
        self._base = np.zeros(0, np.float64)
        self._index = None
        self._pending: list[np.ndarray] = []  # IVF: keys written before it could be trained

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the stored keys, labels and base predictions (grows with every write)."""
        return int(self._keys.nbytes + self._labels.nbytes + self._base.nbytes)

    @staticmethod
    def _normalise(keys) -> np.ndarray:
        h = np.ascontiguousarray(np.asarray(keys, np.float32))
        norm = np.linalg.norm(h, axis=1, keepdims=True)
        return np.ascontiguousarray(h / np.where(norm > 0, norm, 1.0), dtype=np.float32)

    def write(self, keys, labels, base) -> None:
        h = self._normalise(np.asarray(keys).reshape(-1, self.dim))
        y, p = np.asarray(labels, np.float64).reshape(-1), np.asarray(base, np.float64).reshape(-1)
        if self.error_threshold > 0:
            keep = np.abs(y - p) >= self.error_threshold
            h, y, p = h[keep], y[keep], p[keep]
        if len(y) == 0:
            return
        self._keys = np.concatenate([self._keys, h])
        self._labels = np.concatenate([self._labels, y])
        self._base = np.concatenate([self._base, p])
        if self.backend == "faiss":
            self._faiss_add(h)

    def _faiss_add(self, h: np.ndarray) -> None:
        import faiss

        if self._index is None:
            if self.nlist > 0:
                if len(self._keys) < 39 * self.nlist:  # too few to train the coarse quantiser yet
                    return
                quantiser = faiss.IndexFlatIP(self.dim)
                index = faiss.IndexIVFFlat(quantiser, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
                index.train(self._keys)
                index.nprobe = self.nprobe
                index.add(self._keys)  # everything so far, in id order
                self._quantiser, self._index = quantiser, index
                return
            self._index = faiss.IndexFlatIP(self.dim)
            self._index.add(self._keys)  # ids 0 .. n-1, aligned with the label rows
            return
        self._index.add(h)

    def search(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """(cosine similarities, ids) of the ``k`` nearest stored keys, ``[n, k]``; id −1 pads."""
        q = self._normalise(np.asarray(keys).reshape(-1, self.dim))
        n, k = q.shape[0], min(self.k, len(self))
        if k == 0 or n == 0:
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        if self.backend == "faiss" and self._index is not None:
            sims, ids = self._index.search(q, k)
            return sims, ids.astype(np.int64)
        # numpy backend, or an IVF index not trained yet: exact brute force
        sims = q @ self._keys.T
        ids = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.tile(np.arange(k), (n, 1))
        part = np.take_along_axis(sims, ids, 1)
        order = np.argsort(-part, axis=1, kind="stable")
        return np.take_along_axis(part, order, 1), np.take_along_axis(ids, order, 1).astype(np.int64)

    def read(self, keys) -> Readout:
        sims, ids = self.search(keys)
        n = sims.shape[0]
        if sims.shape[1] == 0:
            return Readout.empty(n)
        valid = ids >= 0  # faiss pads with id -1 when it finds fewer than k
        s = np.where(valid, sims.astype(np.float64) / self.tau, 0.0)
        top = np.max(np.where(valid, s, -np.inf), axis=1, keepdims=True)
        a = np.where(valid, np.exp(s - np.where(np.isfinite(top), top, 0.0)), 0.0)  # a stable softmax
        total = a.sum(1, keepdims=True)
        a = a / np.where(total > 0, total, 1.0)
        safe = np.where(valid, ids, 0)
        label = (a * self._labels[safe]).sum(1)
        base = (a * self._base[safe]).sum(1)
        return Readout(label, base, valid.sum(1).astype(np.float64))

    def decay(self, factor: float) -> None:
        """Does nothing: stored samples keep their weight (the ANN memory's policy is
        ``reset`` / ``reset_every``); present so both memories share one interface."""
        del factor
