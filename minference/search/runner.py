"""The search end to end: calibration prompts -> dense forward with capture -> per-layer scores -> a config.

Scores are kept per (example, layer) in a work folder, each file written atomically as soon as its layer is scored.
A rerun with the same settings skips every scored layer (a forward stops after the last layer still missing), and
the choice is always made from the files, so an interrupted and resumed search writes the same config as an
uninterrupted one. The work folder's manifest pins what scores depend on (task, length, seed, error rows, model
shape, candidates) and the date; other examples can be added later, and changing the selection (target density,
minimum recall, tile costs) reuses the scores.
"""
from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .._checks import check_positive_int
from .._files import atomic_write_json as write_json_atomic
from .._files import read_json
from ..config import pattern_from_dict
from .candidates import TileCosts, candidate_space, dense_tiles
from .capture import StopCapture, capture_layers
from .choose import MIN_SLOPE, average_scores, choose_budget, choose_min_recall
from .prompts import calibration_ids, check_task
from .scoring import score_layer

DEFAULT_MIN_RECALL = 0.95

SCORE_VERSION = 2
"""Version of the per-layer score files, pinned in the manifest. 2 added ``recall_last`` (mass kept on the last
query block); a work folder of version-1 scores is refused rather than mixed (score into a new folder)."""


@dataclass(frozen=True)
class SearchSettings:
    """What the scores depend on (the manifest of a work folder).

    Raises:
        ValueError, TypeError: a field out of range, naming it.
    """

    task: str
    length: int
    start_example: int = 0
    num_examples: int = 1
    seed: int = 0
    error_rows: int = 64

    def __post_init__(self):
        check_task(self.task)
        check_positive_int("length", self.length)
        check_positive_int("start_example", self.start_example, minimum=0)
        check_positive_int("num_examples", self.num_examples)
        check_positive_int("seed", self.seed, minimum=0)
        check_positive_int("error_rows", self.error_rows, minimum=0)


def _model_shape(model) -> dict:
    config = model.config
    config = getattr(config, "get_text_config", lambda: config)()
    heads = config.num_attention_heads
    return {
        "layers": config.num_hidden_layers,
        "heads": heads,
        "kv_heads": getattr(config, "num_key_value_heads", None) or heads,
    }


def _score_path(work_dir: Path, example: int, layer: int) -> Path:
    return work_dir / f"example{example:04d}-layer{layer:03d}.json"


def _examples(settings: SearchSettings) -> range:
    return range(settings.start_example, settings.start_example + settings.num_examples)


def _open_work_dir(work_dir: Path, manifest: dict) -> dict:
    """Write the manifest of a new work folder, or check that an existing one matches and return it."""
    path = work_dir / "manifest.json"
    if path.exists():
        existing = read_json(path)
        mismatched = sorted(key for key in manifest if key != "date" and existing.get(key) != manifest[key])
        if mismatched:
            raise ValueError(
                f"work_dir {str(work_dir)!r} holds scores of a different search (differs in {', '.join(mismatched)}); "
                "use another work_dir or delete it"
            )
        return existing
    write_json_atomic(path, manifest)
    return manifest


def score_examples(model, tokenizer, settings: SearchSettings, work_dir: str | Path, *, progress: bool = True) -> dict:
    """Score every layer of every calibration example into ``work_dir`` (skipping what is already there).

    Returns:
        The work folder's manifest (task, length, seed, error rows, model shape, candidates, date).

    Raises:
        ValueError: ``work_dir`` holds another search's scores; a prompt cannot be made at ``settings.length``.
    """
    work_dir = Path(work_dir)
    shape = _model_shape(model)
    candidates = candidate_space(settings.length)
    pinned = {key: value for key, value in asdict(settings).items() if key not in ("start_example", "num_examples")}
    manifest = _open_work_dir(work_dir, {
        **pinned,
        "score_version": SCORE_VERSION,
        "model_shape": shape,
        "candidates": [c.to_dict() for c in candidates],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    layers = shape["layers"]
    for example in _examples(settings):
        missing = [layer for layer in range(layers) if not _score_path(work_dir, example, layer).exists()]
        if not missing:
            continue
        ids = calibration_ids(tokenizer, settings.task, settings.length, example, settings.seed)
        bar = tqdm(total=layers, initial=layers - len(missing), desc=f"example {example}", unit="layer",
                   disable=not progress)

        def on_layer(layer, q, k, v, scaling, example=example, missing=missing, bar=bar):
            if layer in missing:
                scores = score_layer(q, k, v, candidates, sm_scale=scaling, error_rows=settings.error_rows)
                write_json_atomic(_score_path(work_dir, example, layer), {"layer": layer, "example": example, "scores": scores})
                bar.update(1)
            if layer >= missing[-1]:
                raise StopCapture

        try:
            capture_layers(model, ids, on_layer)
        finally:
            bar.close()
        left = [layer for layer in missing if not _score_path(work_dir, example, layer).exists()]
        if left:
            raise ValueError(f"the model never called attention for layers {left}; is its attention on AttentionInterface?")
    return manifest


def load_table(work_dir: str | Path, manifest: dict, examples: range) -> list[list[list[dict]]]:
    """``table[layer][head][slot]``: the scores in ``work_dir`` averaged over ``examples``.

    Raises:
        ValueError: the scores are of another version (older ones lack ``recall_last``), or a score file is missing
            (run :func:`score_examples` for those examples first).
    """
    work_dir = Path(work_dir)
    version = manifest.get("score_version", 1)
    if version != SCORE_VERSION:
        raise ValueError(
            f"work_dir {str(work_dir)!r} holds version-{version} scores (this search needs version {SCORE_VERSION}, "
            "which adds recall_last); score into a new work_dir"
        )
    missing = [str(_score_path(work_dir, e, l)) for e in examples for l in range(manifest["model_shape"]["layers"])
               if not _score_path(work_dir, e, l).exists()]
    if missing:
        raise ValueError(f"{len(missing)} score files are missing, e.g. {missing[0]}; score those examples first")
    return [
        average_scores([read_json(_score_path(work_dir, example, layer))["scores"] for example in examples])
        for layer in range(manifest["model_shape"]["layers"])
    ]


def build_config(
    manifest: dict,
    table: list,
    examples: range,
    *,
    target_density: float | None = None,
    min_recall: float | None = None,
    tile_costs: TileCosts | None = None,
    min_slope: float = MIN_SLOPE,
    model_name: str = "",
) -> dict:
    """Choose a pattern per head from averaged scores: the config as JSON-ready ``{"layers", "metadata"}``.

    ``layers[layer][head]`` are pattern entries (:mod:`minference.config` schema); ``metadata`` is the provenance:
    model, task, length, examples, seed, date, selection, tile costs, overall density and recall, and per-head
    ``scores[layer][head] = {"recall", "error", "density"}``.

    Exactly one of ``target_density`` (global budget, see :func:`choose_budget`) and ``min_recall`` (per head, see
    :func:`choose_min_recall`) may be given; neither means ``min_recall=0.95``.

    Raises:
        ValueError: both selections given, or one out of range.
    """
    if target_density is not None and min_recall is not None:
        raise ValueError("give target_density or min_recall, not both")
    tile_costs = TileCosts() if tile_costs is None else tile_costs
    candidates = [pattern_from_dict(entry) for entry in manifest["candidates"]]
    dense_cost = tile_costs.cost(dense_tiles(manifest["length"]))
    if target_density is not None:
        chosen = choose_budget(candidates, table, target_density, tile_costs, dense_cost=dense_cost, min_slope=min_slope)
        selection = {"target_density": target_density, "min_slope": min_slope}
    else:
        min_recall = DEFAULT_MIN_RECALL if min_recall is None else min_recall
        chosen = choose_min_recall(candidates, table, min_recall, tile_costs)
        selection = {"min_recall": min_recall}
    layers, scores = [], []
    total_cost = total_recall = total_last = 0.0
    for layer, row in zip(table, chosen):
        layers.append([candidates[slot].to_dict() for slot in row])
        layer_scores = []
        for head, slot in enumerate(row):
            item = layer[head][slot]
            cost = tile_costs.cost(item["tiles"])
            total_cost += cost
            total_recall += item["recall"]
            total_last += item["recall_last"]
            layer_scores.append({
                "recall": round(item["recall"], 6),
                "recall_last": round(item["recall_last"], 6),
                "error": round(item["error"], 6),
                "density": round(cost / dense_cost, 6),
            })
        scores.append(layer_scores)
    heads = sum(len(row) for row in chosen)
    metadata = {
        "tool": "minference search",
        "model": model_name,
        "task": manifest["task"],
        "length": manifest["length"],
        "examples": [examples.start, examples.stop],
        "seed": manifest["seed"],
        "date": manifest["date"],
        "selection": selection,
        "tile_costs": asdict(tile_costs),
        "density": round(total_cost / (dense_cost * heads), 6),
        "recall": round(total_recall / heads, 6),
        "recall_last": round(total_last / heads, 6),
        "recall_meaning": "attention mass kept, averaged over query rows, heads and examples",
        "recall_last_meaning": "attention mass kept on the last query block (last 64 rows), averaged over heads and "
                               "examples",
        "objective": "per head, candidates compared at equal cost by min(recall, recall_last)",
        "error_meaning": f"mean relative L2 output error vs dense on the last {manifest['error_rows']} query rows",
        "density_meaning": "kernel cost (tiles incl. estimation, weighted by tile_costs) / dense causal cost",
        "scores": scores,
    }
    return {"layers": layers, "metadata": metadata}


def search(
    model,
    tokenizer,
    *,
    task: str = "kv_retrieval",
    length: int = 4096,
    start_example: int = 0,
    num_examples: int = 1,
    seed: int = 0,
    error_rows: int = 64,
    target_density: float | None = None,
    min_recall: float | None = None,
    tile_costs: TileCosts | None = None,
    work_dir: str | Path,
    model_name: str = "",
    progress: bool = True,
) -> dict:
    """Search a pattern and budget for every head of ``model``; returns the config (see :func:`build_config`), which
    :func:`minference.config.load` / :func:`minference.config.save` accept.

    Args:
        model: a transformers causal LM (attention through ``AttentionInterface``), on the device to search on.
        tokenizer: its tokenizer (``encode(text, add_special_tokens=False)`` and ``bos_token_id``).
        task: ``kv_retrieval``, ``passkey`` or ``text:FILE``; length: calibration prompt length in tokens.
        start_example, num_examples, seed: which synthetic examples to calibrate on.
        error_rows: last query rows on which output error is measured (0 skips it).
        target_density, min_recall: the selection (see :func:`build_config`).
        tile_costs: weights turning tiles into cost (e.g. measured ms per tile); default counts tiles.
        work_dir: folder for per-layer scores; a rerun resumes from it.
        model_name: recorded in the provenance.

    Raises:
        ValueError, TypeError: bad settings (naming the argument), or a ``work_dir`` holding another search.
    """
    settings = SearchSettings(task, length, start_example, num_examples, seed, error_rows)
    manifest = score_examples(model, tokenizer, settings, work_dir, progress=progress)
    table = load_table(work_dir, manifest, _examples(settings))
    return build_config(manifest, table, _examples(settings), target_density=target_density, min_recall=min_recall,
                        tile_costs=tile_costs, model_name=model_name)
