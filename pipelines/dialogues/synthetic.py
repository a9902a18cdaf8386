"""Synthetic conversational-recommendation dialogues with planted unsatisfying turns.

Each dialogue is a user asking for books of one genre, then rounds of an assistant turn that
recommends three items and the user's reply. A planted unsatisfying assistant turn
(``generator.unsatisfying_rate``) recommends items of another genre; the user then repeats the
request, or answers with a short refusal, or (noise, ``polite_accept_rate``) accepts one anyway.
A satisfying turn is answered by accepting one of its items, or (noise, ``ask_more_rate``) by
asking for more without accepting. The planted turns are written to ``truth.json`` beside the
``dialogues-NNN.jsonl`` files, so a scorer's precision and recall can be measured
(``benchmarks/ecpo_scorer.py``). Seeded and deterministic: the same settings write the same bytes.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
from dataclasses import dataclass

TRUTH_FILE = "truth.json"
GENRES = ("fantasy", "mystery", "science fiction", "romance", "history", "poetry", "thriller", "cooking")
ITEMS_PER_GENRE = 30
REQUESTS = (
    "I'm looking for a good {genre} book to read this weekend",
    "Can you recommend some {genre} novels for a long trip",
    "I want a {genre} book with a strong plot and memorable characters",
    "Please suggest a {genre} title I have probably not read yet",
)
REPEATS = ("I said: {request}", "Again, {request}", "{request}, please")
REFUSALS = ("No, not those.", "Not what I asked.", "Nope, something else.", "Wrong genre.")
ASK_MORE = "These look fine but could you show me a few more options first"
ACCEPTS = (
    "Great, I'll take {item}. Anything more like it?",
    "{item} sounds perfect, adding it to my list.",
    "I'll go with {item}, thank you for the help.",
    "Nice, {item} it is. What would you pair with it?",
)
POLITE = ("OK, I'll try {item} I suppose, thanks anyway.", "Fine, put {item} on my list then.")


@dataclass(frozen=True)
class GeneratedDialogues:
    root: str
    files: list[str]
    dialogues: int
    turns: int
    planted: list[tuple[str, int]]


def _item(genre: int, k: int) -> str:
    return f"b{genre:02d}{k:03d}"


def _ts(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def dialogues(params) -> tuple[list[list[dict]], list[tuple[str, int]]]:
    """The dialogues (lists of records) and the planted ``(dialogue_id, turn_index)``."""
    rng = random.Random(params.seed)
    start = dt.datetime.fromisoformat(params.start_date).replace(tzinfo=dt.timezone.utc)
    rounds_max = max(params.rounds_min, params.rounds_max)
    out, planted = [], []
    for d in range(params.dialogues):
        dialogue_id, user_id = f"d{d:06d}", f"u{rng.randrange(params.users):05d}"
        genre = rng.randrange(len(GENRES))
        request = rng.choice(REQUESTS).format(genre=GENRES[genre])
        t = start + dt.timedelta(seconds=rng.uniform(0, params.days * 86400 - 3600))
        records = [{"dialogue_id": dialogue_id, "turn_index": 0, "role": "user", "text": request, "turn_ts": _ts(t),
                    "user_id": user_id, "recommended_items": [], "accepted_items": []}]
        for _ in range(rng.randint(params.rounds_min, rounds_max)):
            bad = rng.random() < params.unsatisfying_rate
            g = (genre + rng.randrange(1, len(GENRES))) % len(GENRES) if bad else genre
            items = [_item(g, k) for k in rng.sample(range(ITEMS_PER_GENRE), 3)]
            text = (f"You might enjoy {items[0]}, {items[1]} and {items[2]}, popular {GENRES[g]} titles."
                    if bad else f"Here are {GENRES[g]} picks for you: {items[0]}, {items[1]} and {items[2]}.")
            t += dt.timedelta(seconds=rng.uniform(2, 20))
            index = len(records)
            records.append({"dialogue_id": dialogue_id, "turn_index": index, "role": "assistant", "text": text,
                            "turn_ts": _ts(t), "user_id": user_id, "recommended_items": items, "accepted_items": []})
            if bad:
                planted.append((dialogue_id, index))
            u, accepted = rng.random(), []
            if bad and u < params.polite_accept_rate:
                accepted = [rng.choice(items)]
                reply = rng.choice(POLITE).format(item=accepted[0])
            elif bad and u < params.polite_accept_rate + (1 - params.polite_accept_rate) / 2:
                reply = rng.choice(REPEATS).format(request=request)
            elif bad:
                reply = rng.choice(REFUSALS)
            elif u < params.ask_more_rate:
                reply = ASK_MORE
            else:
                accepted = [rng.choice(items)]
                reply = rng.choice(ACCEPTS).format(item=accepted[0])
            t += dt.timedelta(seconds=rng.uniform(5, 60))
            records.append({"dialogue_id": dialogue_id, "turn_index": len(records), "role": "user", "text": reply,
                            "turn_ts": _ts(t), "user_id": user_id, "recommended_items": [], "accepted_items": accepted})
        out.append(records)
    return out, planted


def generate(folder: str, params) -> GeneratedDialogues:
    """Write the dialogues as JSON Lines (``dialogues-NNN.jsonl``) and ``truth.json`` into ``folder``.

    Files of an earlier generation with other names are removed, so the folder holds exactly this
    generation."""
    os.makedirs(folder, exist_ok=True)
    data, planted = dialogues(params)
    names = [f"dialogues-{i:03d}.jsonl" for i in range(params.files)]
    for stale in os.listdir(folder):
        if stale.startswith("dialogues-") and stale.endswith(".jsonl") and stale not in names:
            os.remove(os.path.join(folder, stale))
    lines: list[list[str]] = [[] for _ in names]
    for d, records in enumerate(data):
        lines[d % len(names)] += [json.dumps(r, sort_keys=True) for r in records]
    paths = []
    for name, body in zip(names, lines):
        path = os.path.join(folder, name)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in body))
        os.replace(tmp, path)
        paths.append(path)
    truth = {"seed": params.seed, "planted": [list(p) for p in planted]}
    with open(os.path.join(folder, TRUTH_FILE), "w", encoding="utf-8") as fh:
        json.dump(truth, fh, sort_keys=True)
    return GeneratedDialogues(folder, paths, len(data), sum(len(r) for r in data), planted)


def read_truth(folder: str) -> set[tuple[str, int]]:
    with open(os.path.join(folder, TRUTH_FILE), encoding="utf-8") as fh:
        return {(d, int(i)) for d, i in json.load(fh)["planted"]}
