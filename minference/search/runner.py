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
import re
from collections.abc import Sequence
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


def _layer_scores(work_dir: Path, manifest: dict, examples) -> list[list[list[list[dict]]]]:
    """``scores[layer][i]``: example ``examples[i]``'s scores of ``layer`` as stored in ``work_dir``."""
    version = manifest.get("score_version", 1)
    if version != SCORE_VERSION:
        raise ValueError(
            f"work_dir {str(work_dir)!r} holds version-{version} scores (this search needs version {SCORE_VERSION}, "
            "which adds recall_last); score into a new work_dir"
        )
    layers = manifest["model_shape"]["layers"]
    missing = [str(_score_path(work_dir, e, l)) for e in examples for l in range(layers)
               if not _score_path(work_dir, e, l).exists()]
    if missing:
        raise ValueError(f"{len(missing)} score files are missing, e.g. {missing[0]}; score those examples first")
    return [[read_json(_score_path(work_dir, e, layer))["scores"] for e in examples] for layer in range(layers)]


_SAME_SCALE = ("length", "error_rows", "score_version", "model_shape", "candidates")
"""What two work folders must share for their scores to be averaged: the task, seed and examples may differ."""


def scored_examples(work_dir: str | Path) -> list[int]:
    """The examples every layer of which is scored in ``work_dir`` (a finished search's calibration set).

    Raises:
        ValueError: ``work_dir`` holds no manifest, no finished example, or an example scored on only some layers.
    """
    work_dir = Path(work_dir)
    if not (work_dir / "manifest.json").is_file():
        raise ValueError(f"work_dir {str(work_dir)!r} holds no search scores (no manifest.json)")
    layers = read_json(work_dir / "manifest.json")["model_shape"]["layers"]
    found: dict[int, set[int]] = {}
    for path in work_dir.glob("example*-layer*.json"):
        match = re.fullmatch(r"example(\d+)-layer(\d+)\.json", path.name)
        if match:
            found.setdefault(int(match[1]), set()).add(int(match[2]))
    partial = sorted(e for e, scored in found.items() if len(scored) < layers)
    if partial:
        raise ValueError(f"work_dir {str(work_dir)!r}: example {partial[0]} is scored on only "
                         f"{len(found[partial[0]])} of {layers} layers; finish that search first")
    if not found:
        raise ValueError(f"work_dir {str(work_dir)!r} holds no scored example")
    return sorted(found)


def load_table(
    work_dir: str | Path, manifest: dict, examples: range, *, add: Sequence[str | Path] = ()
) -> list[list[list[dict]]]:
    """``table[layer][head][slot]``: the scores in ``work_dir`` averaged over ``examples``.

    ``add``: work folders of other finished searches (another task, seed or examples, same model, length and
    candidates) whose every scored example joins the average, one weight per example: a config calibrated on a
    retrieval prompt and on prose at once.

    Raises:
        ValueError: the scores are of another version (older ones lack ``recall_last``), a score file is missing
            (run :func:`score_examples` for those examples first), or an ``add`` folder scored another model,
            length or candidate set (naming what differs).
    """
    work_dir = Path(work_dir)
    per_layer = _layer_scores(work_dir, manifest, examples)
    for other_dir in map(Path, add):
        examples_there = scored_examples(other_dir)
        other = read_json(other_dir / "manifest.json")
        differing = [key for key in _SAME_SCALE if other.get(key) != manifest.get(key)]
        if differing:
            raise ValueError(f"add: work_dir {str(other_dir)!r} scored another search (differs in "
                             f"{', '.join(differing)}); only the task, seed and examples may differ")
        for layer, scores in enumerate(_layer_scores(other_dir, other, examples_there)):
            per_layer[layer].extend(scores)
    return [average_scores(scores) for scores in per_layer]


def calibration_sets(manifest: dict, examples: range, add: Sequence[str | Path] = ()) -> list[dict]:
    """Provenance of every calibration set in a choice: task, seed and examples of the search and of each ``add``."""
    sets = [{"task": manifest["task"], "seed": manifest["seed"], "examples": list(examples)}]
    for other_dir in map(Path, add):
        other = read_json(other_dir / "manifest.json")
        sets.append({"task": other["task"], "seed": other["seed"], "examples": scored_examples(other_dir)})
    return sets


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
    calibration: list[dict] | None = None,
) -> dict:
    """Choose a pattern per head from averaged scores: the config as JSON-ready ``{"layers", "metadata"}``.

    ``layers[layer][head]`` are pattern entries (:mod:`minference.config` schema); ``metadata`` is the provenance:
    model, task, length, examples, seed, date, the calibration sets averaged (``calibration``, from
    :func:`calibration_sets`; default the search's own), selection, tile costs, overall density and recall, and
    per-head ``scores[layer][head] = {"recall", "error", "density"}``.

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
        "calibration": calibration or calibration_sets(manifest, examples),
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


def choose_config(
    work_dir: str | Path,
    manifest: dict,
    examples: range,
    *,
    add: Sequence[str | Path] = (),
    target_density: float | None = None,
    min_recall: float | None = None,
    tile_costs: TileCosts | None = None,
    model_name: str = "",
) -> dict:
    """The config chosen from ``work_dir``'s scores of ``examples`` and every example of the ``add`` folders
    (:func:`load_table`), its metadata naming each calibration set (:func:`calibration_sets`); the selection
    arguments as in :func:`build_config`."""
    table = load_table(work_dir, manifest, examples, add=add)
    return build_config(manifest, table, examples, target_density=target_density, min_recall=min_recall,
                        tile_costs=tile_costs, model_name=model_name,
                        calibration=calibration_sets(manifest, examples, add))


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
    add_scores: Sequence[str | Path] = (),
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
        add_scores: work folders of other finished searches averaged into the choice (see :func:`load_table`).

    Raises:
        ValueError, TypeError: bad settings (naming the argument), or a ``work_dir`` holding another search.
    """
    settings = SearchSettings(task, length, start_example, num_examples, seed, error_rows)
    manifest = score_examples(model, tokenizer, settings, work_dir, progress=progress)
    return choose_config(work_dir, manifest, _examples(settings), add=add_scores, target_density=target_density,
                         min_recall=min_recall, tile_costs=tile_costs, model_name=model_name)
