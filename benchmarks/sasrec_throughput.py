"""SASRec throughput (sequences per second): training steps and full-ranking evaluation, RoTE vs none.

Loads ``user_sequences`` of a data set (built once by ``benchmarks/_sasrec_data.py``), then for
each variant times ``--epochs`` training epochs (forward, backward and Adam step over every
user's training sequence) and one full-ranking evaluation of the test rows, with one torch
thread. Prints sequences per second and the ratio RoTE / no RoTE measured in the same run
(the baseline is SASRec without RoTE). Also times the reader alone (table -> padded arrays).

    .venv/bin/python benchmarks/sasrec_throughput.py                   # ML-100K, 3 epochs
    .venv/bin/python benchmarks/sasrec_throughput.py --dataset kuairand --epochs 1
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _sasrec_data import DATASETS, DEFAULT_ROOT, prepare  # noqa: E402


#: The configurations measured, by name (options of ``SASRecConfig``).
VARIANTS = {
    "sasrec": {},
    "sasrec+rote": {"rote": True},
    "sasrec+cape": {"cape": True},
    "sasrec+rote+cape": {"rote": True, "cape": True},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="ml-100k", choices=list(DATASETS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    args = p.parse_args(argv)

    import torch

    from trainers.sasrec import SASRec, SASRecConfig, evaluate, load_data, loss_of, train_batches
    from trainers.sequences import ItemVocab, read_sequences

    torch.set_num_threads(args.threads)
    uri = prepare(args.dataset, args.root)
    print(f"SASRec throughput on {args.dataset}: {os.cpu_count()} CPUs, {args.threads} torch thread(s)")
    vocab = ItemVocab.fit(uri)
    t0 = time.perf_counter()
    rows = sum(len(b) for b in read_sequences(uri, vocab, rote_form="sasrec"))
    dt_read = time.perf_counter() - t0
    print(f"reader: {rows} rows -> padded arrays + RoTE levels in {dt_read:.2f} s = {rows / dt_read:,.0f} rows/s")
    results = {}
    for name, options in VARIANTS.items():
        cfg = SASRecConfig(warehouse=uri, progress=False, seed=1, **options)
        data = load_data(cfg)
        torch.manual_seed(1)
        model = SASRec(data.vocab.size, cfg)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2))
        model.train()
        seqs = 0
        t0 = time.perf_counter()
        for epoch in range(args.epochs):
            for batch in train_batches(data, cfg, epoch):
                opt.zero_grad(set_to_none=True)
                loss_of(model, batch).backward()
                opt.step()
                seqs += len(batch[0])
        train_rate = seqs / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        evaluate(model, data, data.test, "test", cfg.eval_batch)
        eval_rate = len(data.test) / (time.perf_counter() - t0)
        results[name] = (train_rate, eval_rate)
        print(f"{name:12s}: train {train_rate:8,.0f} seq/s ({seqs} sequences), "
              f"evaluation {eval_rate:8,.0f} seq/s ({len(data.test)} users, {data.vocab.size} items ranked)")
    bt, be = results["sasrec"]
    for name, (rt, re_) in results.items():
        if name != "sasrec":
            print(f"ratio {name} / sasrec: train {rt / bt:.2f}, evaluation {re_ / be:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
