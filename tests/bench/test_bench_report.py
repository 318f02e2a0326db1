"""Benchmark reports: derived columns, the markdown table, atomic JSON, the PNG chart."""

from __future__ import annotations

import json
import os

import pytest
import torch

from minference.bench.kernels import Row, add_derived
from minference.bench.report import markdown_table, write_chart, write_json_atomic

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(method, ms, n=32768, pattern="dense", index_set="–", budget="", **fields):
    return Row(method, pattern, budget, index_set, n, 1, 32, 8, 128, "bfloat16", ms=ms, **fields)


def _rows():
    rows = [
        _row("sdpa_flash", 20.0, density=1.0),
        _row("sdpa_cudnn", 10.0, density=1.0),
        _row(
            "flex", 4.0, pattern="vertical_slash", budget="v=1000 s=6096", index_set="measured", density=0.25
        ),
        _row(
            "minference",
            2.0,
            pattern="vertical_slash",
            budget="v=1000 s=6096",
            index_set="measured",
            density=0.2,
            estimate_ms=0.5,
        ),
        _row("sdpa_cudnn", 160.0, n=131072, density=1.0, extrapolated=True),
        _row("minference", None, n=131072, pattern="vertical_slash", index_set="random", status="oom"),
    ]
    add_derived(rows)
    return rows


def test_derived_columns_use_causal_flops_and_same_shape_baselines():
    rows = _rows()
    ours = rows[3]
    flops = 2 * 32 * 128 * 32768**2  # 4 * B * H * D * N^2 / 2
    assert ours.dense_tflops == pytest.approx(flops / 2e-3 / 1e12)
    assert ours.kept_tflops == pytest.approx(ours.dense_tflops * 0.2)
    assert ours.speedup_vs_sdpa_flash == pytest.approx(10.0)
    assert ours.speedup_vs_sdpa_cudnn == pytest.approx(5.0)
    assert ours.speedup_vs_flex == pytest.approx(2.0)
    assert ours.kept_share_of_cudnn == pytest.approx(0.2 * 5.0), "kept TFLOP/s over cuDNN's TFLOP/s"
    assert rows[0].speedup_vs_sdpa_cudnn == pytest.approx(0.5)
    assert rows[-1].dense_tflops is None, "a failed row gets no derived numbers"


def test_markdown_table_lists_measured_rows_and_explains_the_rest():
    rows = [r.as_dict() for r in _rows()]
    table = markdown_table(rows, {"gpu": "NVIDIA H100", "cuda": "12.8", "torch": "2.11", "triton": "3.6"})
    lines = table.splitlines()
    assert lines[0].startswith("**NVIDIA H100 | CUDA 12.8 | torch 2.11 | triton 3.6")
    header = next(line for line in lines if line.startswith("| N |"))
    for column in (
        "density",
        "ms",
        "est+index ms",
        "TFLOP/s dense-eq",
        "TFLOP/s kept",
        "kept % of cuDNN",
        "× FA2",
        "× cuDNN",
        "× Flex",
        "index set",
        "budget",
    ):
        assert f" {column} " in header, column
    body = [line for line in lines if line.startswith("| 32K") or line.startswith("| 128K")]
    assert len(body) == 5
    assert "| 20.0% | 2 | 0.5 |" in body[3] and "| 100% | 10.00× | 5.00× | 2.00× |" in body[3], body[3]
    assert "| ~160 |" in body[4], body[4]
    assert any("128K×1 minference vertical_slash random: oom" in line for line in lines)


def test_json_is_written_atomically(tmp_path):
    path = tmp_path / "out" / "kernels.json"
    write_json_atomic(str(path), {"rows": [_rows()[3].as_dict()]})
    assert json.loads(path.read_text())["rows"][0]["method"] == "minference"
    assert os.stat(path).st_mode & 0o044, "the result should be readable like any other file"
    with pytest.raises(ValueError):
        write_json_atomic(str(path), {"bad": float("nan")})
    assert json.loads(path.read_text())["rows"], "a failed write must leave the old file"
    assert sorted(os.listdir(path.parent)) == ["kernels.json"], "no temporary file may be left"


def test_chart_is_a_png_with_one_panel_per_batch(tmp_path):
    rows = [r.as_dict() for r in _rows()]
    rows.append(dict(rows[0], batch=4))
    path = tmp_path / "kernels.png"
    write_chart(str(path), rows, title="test")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_the_kernel_chart_draws_one_styled_line_per_method_and_one_panel_per_batch(monkeypatch, tmp_path):
    from minference.bench import report

    drawn = {}
    monkeypatch.setattr(report, "write_log_log_chart",
                        lambda path, panels, **options: drawn.update(options, panels=panels))
    rows = [r.as_dict() for r in _rows()]
    rows.append(dict(rows[0], batch=4, n=65536))
    write_chart(str(tmp_path / "kernels.png"), rows, title="sweep")
    titles = [title for title, _ in drawn["panels"]]
    assert titles == ["batch 1", "batch 4"] and drawn["title"] == "sweep" and drawn["x_base"] == 2
    one, four = (lines for _, lines in drawn["panels"])
    assert [line.label for line in four] == ["sdpa_flash"] and four[0].points == [(65536, 20.0)]
    measured = {r["method"] for r in rows if r.get("status") == "ok" and r.get("ms") and r["batch"] == 1}
    assert {line.label.split()[0] for line in one} == measured
    assert all(line.style == report.line_style(line.label) for line in one)


def test_log_log_chart_is_written_atomically(tmp_path):
    from minference.bench.report import Series, write_log_log_chart

    path = tmp_path / "out" / "chart.png"
    lines = [Series("a", [(1000, 2.0), (10, 1.0)], {"marker": "o"}), Series("b", [(10, 3.0), (1000, 30.0)])]
    write_log_log_chart(str(path), [("", lines)], xlabel="tokens", ylabel="seconds", title="model prefill")
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert os.stat(path).st_mode & 0o044, "the chart should be readable like any other file"
    assert sorted(os.listdir(path.parent)) == ["chart.png"], "no temporary file may be left"
    with pytest.raises(ValueError, match="at least one panel"):
        write_log_log_chart(str(path), [], xlabel="tokens", ylabel="seconds")


def test_the_header_names_the_commit_that_was_measured():
    machine = {"gpu": "NVIDIA H200", "cuda": "13.0", "torch": "2.11", "triton": "3.6", "commit": "071eed5+dirty"}
    assert markdown_table([], machine).splitlines()[0].rstrip("*").endswith("| commit 071eed5+dirty")
    assert "commit" not in markdown_table([], {**machine, "commit": None}).splitlines()[0]


def test_source_commit_is_this_checkouts_head():
    import subprocess

    from minference.bench.report import source_commit

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(__file__))
    if head.returncode != 0:  # an sdist or wheel install has no history: the row then says so
        assert source_commit() is None
    else:
        assert source_commit().split("+")[0] == head.stdout.strip()


def test_rows_record_how_the_kernels_load_kv(monkeypatch):
    from minference.bench.report import machine_info

    monkeypatch.setenv("MINFERENCE_TMA", "1")
    assert machine_info("cpu", torch.float32)["kv_loads"] == "TMA"
    monkeypatch.setenv("MINFERENCE_TMA", "0")
    machine = machine_info("cpu", torch.float32)
    assert machine["kv_loads"] == "pointers"
    assert "| K/V via pointers |" in markdown_table([], machine).splitlines()[0]
