"""Trainer throughput: the loader alone against training, on a warehouse's watch_time_labels.

Reads and encodes the splits once (streamed pyarrow batches -> encoded int64 fields), then for
FM and DeepFM measures, for one epoch at the configured batch size:

- read+encode: rows per second of streaming the label table, joining items/users and encoding;
- loader: samples per second of iterating the shuffled tensor batches alone (no model);
- training: samples per second of loader + forward + backward + Adam step;

and prints the ratio loader/training (above 1: the loader is not the bottleneck).

    .venv/bin/python benchmarks/trainer_throughput.py --warehouse var/warehouse [--batch-size 512] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warehouse", required=True)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from trainers.config import DateSplit
    from trainers.data import tensor_batches
    from trainers.loop import deterministic
    from trainers.watch_time.data import load_watch_time_data
    from trainers.watch_time.labels import LabelParams, prepare_labels
    from trainers.watch_time.losses import soft_bce
    from trainers.watch_time.models import build_backbone

    t0 = time.perf_counter()
    data = load_watch_time_data(args.warehouse, DateSplit())
    load_s = time.perf_counter() - t0
    train = data.splits["train"]
    train.columns["_y"] = prepare_labels(data, LabelParams("d2co")).targets["train"].astype("float32")
    n = len(train)
    print(f"trainer throughput: {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} thread(s), batch {args.batch_size}")
    print(f"rows: train {n:,}, valid {len(data.splits['valid']):,}, test {len(data.splits['test']):,}; load {load_s:.1f} s")
    print(f"read+encode (stream, join, encode): {data.loader_samples_per_s:,.0f} rows/s")
    with deterministic(61, args.threads):
        t0 = time.perf_counter()
        for _ in tensor_batches(train, ["_y"], args.batch_size, 61, 0):
            pass
        loader = n / (time.perf_counter() - t0)
        print(f"loader alone: {loader:,.0f} samples/s")
        for backbone in ("fm", "deepfm"):
            model = build_backbone(backbone, data.encoder.cardinalities, 10, (64, 64, 64), 0.2)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            model.train()
            t0 = time.perf_counter()
            for x, y in tensor_batches(train, ["_y"], args.batch_size, 61, 1):
                if len(x) < 2:
                    continue
                opt.zero_grad()
                soft_bce(model(x), y).backward()
                opt.step()
            sps = n / (time.perf_counter() - t0)
            print(f"training {backbone}: {sps:,.0f} samples/s; loader/training ratio {loader / sps:.1f}x")


if __name__ == "__main__":
    main()
