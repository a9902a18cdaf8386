"""FAIR training: SASRec's leave-one-out data path, the FAIR losses, full ranking, the run and the spec."""
from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from features.item_codes import ITEM_CODES
from features.sequences import USER_SEQUENCES
from trainers.fair.codes import CodeBook, beam_search
from trainers.fair.config import KS, MODEL_NAME, FAIRConfig
from trainers.fair.model import FAIR
from trainers.loop import deterministic, fit, per_second
from trainers.runs import RunResult, pinned_while_training, save_run
from trainers.sasrec import SASRecConfig, evaluate, load_data, sample_users, train_batches
from trainers.sasrec.data import SASRecData, Split, first_used_column
from trainers.sequences import FIRST_ITEM, OOV
from trainers.spec import ModelSpec
from trainers.tables import open_table


def sasrec_view(config: FAIRConfig) -> SASRecConfig:
    """The SASRec config whose data path FAIR reuses (same table, split, length, batches)."""
    fields = ("warehouse", "runs_root", "seed", "batch_size", "max_len", "table_versions", "threads", "eval_users_max")
    return SASRecConfig(**{k: getattr(config, k) for k in fields}, progress=False)


def load(config: FAIRConfig) -> tuple[SASRecData, CodeBook]:
    data = load_data(sasrec_view(config))
    book = CodeBook.read(config.warehouse, data.vocab, config.table_versions.get(ITEM_CODES.name))
    return data, book


def loss_of(model: FAIR, batch: tuple) -> torch.Tensor:
    items, mask, _levels, pos, _neg = batch
    return model.loss(items, mask, pos)


@torch.no_grad()
def evaluate_beam(model: FAIR, data: SASRecData, book: CodeBook, split: Split, prefix: str, beam: int,
                  batch: int = 1_024) -> dict[str, float]:
    """HR/NDCG@5/10 of the items constrained beam search returns (an item outside the returned
    list is a miss); the user's other items are excluded at the leaves."""
    model.eval()
    kmax = max(KS)
    sums = {f"{m}@{k}": 0.0 for m in ("hr", "ndcg") for k in KS}
    n = len(split)
    for start in range(0, n, batch):
        rows = np.arange(start, min(start + batch, n))
        first = first_used_column(split.mask[rows])
        lp = [t.double().numpy() for t in model.token_log_probs(
            torch.from_numpy(split.items[rows, first:]), torch.from_numpy(split.mask[rows, first:]))]
        for r, row in enumerate(rows):
            u = split.users[row]
            target = int(split.targets[row])
            mine = set(data.user_items[data.user_items_ptr[u]:data.user_items_ptr[u + 1]].tolist()) - {target}
            got = [i for i, _ in beam_search([l[r] for l in lp], book.trie, beam, kmax, mine)]
            if target in got:
                rank = got.index(target)
                for k in KS:
                    if rank < k:
                        sums[f"hr@{k}"] += 1.0
                        sums[f"ndcg@{k}"] += 1.0 / np.log2(rank + 2.0)
    out = {f"{prefix}_{k}": v / n if n else float("nan") for k, v in sums.items()}
    out[f"{prefix}_rows"] = n
    out[f"{prefix}_unknown_targets"] = int((split.targets == OOV).sum())
    return out


def evaluate_fair(model, data, book, split, prefix, config: FAIRConfig) -> dict[str, float]:
    if config.eval_decode == "beam":
        return evaluate_beam(model, data, book, split, prefix, config.beam, config.eval_batch)
    return evaluate(model, data, split, prefix, config.eval_batch)


def train(config: FAIRConfig):
    """Train, select on validation NDCG@10, test, and write a run directory; returns a ``RunResult``."""
    with contextlib.ExitStack() as pins:
        with deterministic(config.seed, config.threads) as environment:
            t0 = time.perf_counter()
            data, book = load(config)
            load_s = time.perf_counter() - t0
            tables = {USER_SEQUENCES.name: open_table(config.warehouse, USER_SEQUENCES, data.table_version).record(),
                      ITEM_CODES.name: open_table(config.warehouse, ITEM_CODES, book.table_version).record()}
            pins.enter_context(pinned_while_training(config.warehouse, tables, MODEL_NAME))
            model = FAIR(book.codes, book.sizes, config)
            sas = sasrec_view(config)
            valid = sample_users(data.valid, config.eval_users_max, config.seed)
            test_rows = sample_users(data.test, config.eval_users_max, config.seed)
            res = fit(
                model, loss_of, lambda epoch: train_batches(data, sas, epoch),
                lambda m: evaluate_fair(m, data, book, valid, "valid", config), "valid_ndcg@10",
                epochs=config.epochs, patience=config.patience, lr=config.lr, weight_decay=config.weight_decay,
                betas=(0.9, config.beta2), progress=config.progress, desc=MODEL_NAME, eval_interval=config.eval_interval,
            )
            t1 = time.perf_counter()
            test = evaluate_fair(model, data, book, test_rows, "test", config)
            eval_s = time.perf_counter() - t1

        def strip(prefix: str, d: dict) -> dict:
            return {k[len(prefix) + 1:]: v for k, v in d.items() if k.startswith(prefix + "_")}

        coded = book.coded[FIRST_ITEM:]
        metrics = {
            **res.record("ndcg@10", strip("valid", res.best_metrics)), "test": strip("test", test),
            "throughput": {"train_samples_per_s": res.train_samples_per_s,
                           "eval_samples_per_s": per_second(len(test_rows), eval_s)},
            "load_s": load_s, "train_users": len(data.train), "items": len(data.vocab.item_ids),
            "items_with_codes": int(coded.sum()), "code_sizes": list(book.sizes),
            "codebook_version": book.codebook_version, "adam_betas": [0.9, config.beta2],
            "lambdas": [float(a.lam().detach()) for a in model.attn if a.focused],
        }
        cfg = config.model_dump(mode="json")
        encoders = {"items": data.vocab.to_dict(), "codes": {"sizes": list(book.sizes), "codebook_version": book.codebook_version}}
        run_dir = save_run(config.runs_root, MODEL_NAME, cfg, environment, encoders, model.state_dict(), metrics,
                           config.warehouse, tables)
    return RunResult(model=MODEL_NAME, run_dir=run_dir, metrics=metrics, tables=tables, config=cfg)


def tables(config: FAIRConfig | None = None) -> list[str]:
    return [USER_SEQUENCES.name, ITEM_CODES.name]


SPEC = ModelSpec(
    name=MODEL_NAME,
    config_cls=FAIRConfig,
    train=train,
    tables=tables,
    description="FAIR generative next-item model over item_codes semantic IDs with focused attention (user_sequences, leave-one-out)",
    select_metric="valid_ndcg@10",
)
