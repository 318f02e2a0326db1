"""Run examples under attention methods: greedy generation, scoring, density, resumable results.

For every method and length: measure the density the method computes on that length's first prompt (a probe
forward, see :mod:`.density`; matched-density methods get their budgets calibrated here), switch the model's
attention (:func:`.models.apply_attention`), then generate and score each example not yet in the store.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from . import density as density_mod
from . import metrics, ppl
from .example import Example
from .methods import Method
from .models import LoadedModel, apply_attention
from .prompting import render
from .results import ResultStore, fingerprint
from .tiles import executed_tiles

DEFAULT_BUDGETS = (1000, 6096)


@torch.no_grad()
def generate_answer(loaded: LoadedModel, example: Example, use_chat_template: bool = True) -> tuple:
    """Greedy answer to ``example`` and the prompt's token count."""
    tokenizer, model = loaded.tokenizer, loaded.model
    text = render(tokenizer, example.prompt, example.answer_prefix, use_chat_template)
    ids = tokenizer(
        text, return_tensors="pt", add_special_tokens=not getattr(tokenizer, "chat_template", None)
    )
    input_ids = ids["input_ids"].to(model.device)
    output = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=example.max_new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    answer = tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
    return answer, input_ids.shape[1]


def prompt_ids(loaded: LoadedModel, example: Example, use_chat_template: bool = True) -> torch.Tensor:
    text = render(loaded.tokenizer, example.prompt, example.answer_prefix, use_chat_template)
    return loaded.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


def method_density(loaded: LoadedModel, method: Method, ids: torch.Tensor, rankings=None) -> dict:
    """Budgets and measured density of ``method`` on the prompt ``ids (1, N)`` (calibrated for matched density).

    Returns ``{"vertical", "slash", "density", "target", "tokens", "tiles"}``; density 1.0 and no budgets for dense.
    For a config file the probe density is None (the probe only knows uniform vertical-slash budgets; neither does it
    for baselines such as ``streaming`` or ``inf_llm``). ``tiles`` is the executed-tile density
    (:func:`minference.evals.tiles.executed_tiles`), measured for every method with a per-head config, so a config
    and uniform budgets are compared on one cost measure.
    """
    n = ids.shape[1]
    if method.is_dense:
        return {"vertical": None, "slash": None, "density": 1.0, "target": None, "tokens": n, "tiles": 1.0}
    if method.config is not None or not method.uses_budgets:  # the probe knows uniform vertical-slash budgets only
        tiles = executed_tiles(loaded, method, ids)
        return {"vertical": None, "slash": None, "density": None, "target": None, "tokens": n, "tiles": tiles}
    rankings = rankings or density_mod.rank_lines(loaded.model, ids)
    if method.density is None:
        vertical, slash = DEFAULT_BUDGETS
        measured = rankings.density(min(vertical, n), min(slash, n))
        tiles = executed_tiles(loaded, method, ids)
    else:
        vertical, slash, measured = density_mod.calibrate(rankings, method.density)
        tiles = executed_tiles(loaded, method, ids, (vertical, slash))
    return {
        "vertical": vertical, "slash": slash, "density": measured, "target": method.density, "tokens": n,
        "tiles": tiles,
    }


def run_examples(
    loaded: LoadedModel,
    methods: Sequence[Method],
    examples: Sequence[Example],
    store: ResultStore,
    *,
    use_chat_template: bool = True,
    measure_density: bool = True,
    on_record: Callable[[dict], None] | None = None,
) -> ResultStore:
    """Generate and score every example under every method, skipping those already in ``store``."""
    by_length: dict[int, list[Example]] = defaultdict(list)
    for example in examples:
        by_length[example.length].append(example)
    prints = {e.key: e.fingerprint for e in examples}
    store.check_fingerprints([m.label for m in methods], prints)  # refuse before any work, not midway
    total = sum(not store.done(m.label, e.key, prints[e.key]) for m in methods for e in examples)
    bar = tqdm(total=total, desc="eval", unit="ex")
    try:
        for method in methods:
            for length, group in sorted(by_length.items()):
                todo = [e for e in group if not store.done(method.label, e.key, prints[e.key])]
                info = store.density.get(method.label, {}).get(str(length))
                if not todo and info is not None:
                    continue
                if info is None:
                    ids = prompt_ids(loaded, group[0], use_chat_template)
                    if measure_density or method.density is not None:
                        info = method_density(loaded, method, ids)
                    else:
                        info = {"vertical": None, "slash": None, "density": None, "target": None}
                    store.set_density(method.label, length, info)
                budgets = (info["vertical"], info["slash"]) if method.density is not None else None
                apply_attention(loaded.model, method, budgets)
                try:
                    for example in todo:
                        bar.set_postfix_str(f"{method.label} {example.task} {length}")
                        start = time.perf_counter()
                        answer, tokens = generate_answer(loaded, example, use_chat_template)
                        record = {
                            **example.to_record(),
                            "prediction": answer,
                            "tokens": tokens,
                            "score": metrics.score(example.metric, answer, example.answers),
                            "seconds": round(time.perf_counter() - start, 3),
                        }
                        store.add(method.label, example.key, record, prints[example.key])
                        if on_record is not None:
                            on_record(record)
                        bar.update(1)
                finally:
                    apply_attention(loaded.model, Method("dense", "dense"))
    finally:
        bar.close()
    return store


def run_ppl(
    loaded: LoadedModel,
    methods: Sequence[Method],
    lengths: Sequence[int],
    samples: int,
    store: ResultStore,
    *,
    pg19: str | None = None,
    text_dir: str | None = None,
    chunk: int = 4096,
) -> ResultStore:
    """Perplexity of ``samples`` windows per length under every method; records score = PPL (lower is better)."""
    stream, source = ppl.load_token_stream(loaded.tokenizer, max(lengths) * 2, pg19=pg19, text_dir=text_dir)
    store.meta["text_source"] = source
    chunks_by_length = {n: ppl.windows(stream, n, samples) for n in lengths}
    prints = {
        f"ppl|{n}|{i}": window_fingerprint(window)
        for n, chunks in chunks_by_length.items()
        for i, window in enumerate(chunks)
    }
    store.check_fingerprints([m.label for m in methods], prints)  # refuse before any work, not midway
    total = sum(not store.done(m.label, key, value) for m in methods for key, value in prints.items())
    bar = tqdm(total=total, desc="ppl", unit="window")
    try:
        for method in methods:
            for length in lengths:
                chunks = chunks_by_length[length]
                todo = [i for i in range(samples) if not store.done(method.label, f"ppl|{length}|{i}")]
                if not todo:
                    continue
                info = store.density.get(method.label, {}).get(str(length))
                if info is None:
                    info = method_density(loaded, method, torch.tensor([chunks[0]]))
                    store.set_density(method.label, length, info)
                budgets = (info["vertical"], info["slash"]) if method.density is not None else None
                apply_attention(loaded.model, method, budgets)
                try:
                    for i in todo:
                        nll, count = ppl.negative_log_likelihood(loaded.model, chunks[i], chunk)
                        record = {
                            "task": "ppl",
                            "length": length,
                            "index": i,
                            "nll": nll,
                            "count": count,
                            "score": ppl.perplexity(nll, count),
                        }
                        store.add(method.label, f"ppl|{length}|{i}", record, prints[f"ppl|{length}|{i}"])
                        bar.update(1)
                finally:
                    apply_attention(loaded.model, Method("dense", "dense"))
    finally:
        bar.close()
    return store


def window_fingerprint(ids) -> str:
    """The fingerprint of a PPL record: its window's tokens (they move with --samples and the text span)."""
    return fingerprint({"ppl_window": list(ids)})


def ppl_by_method(store: ResultStore) -> dict[str, dict[int, float]]:
    """Mean per-window perplexity per method and length."""
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in store.records.values():
        if record["task"] == "ppl":
            sums[record["method"]][int(record["length"])].append(
                ppl.perplexity(record["nll"], record["count"])
            )
    return {m: {n: sum(v) / len(v) for n, v in sorted(by.items())} for m, by in sums.items()}
