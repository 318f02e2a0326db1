"""``minference bench kernels`` end to end on the CPU (tiny shapes, torch backend): table, JSON, PNG."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import types

import pytest


@pytest.fixture
def bench_cli(monkeypatch):
    """The CLI module; a placeholder ``e2e`` is used only while the real one is not importable."""
    try:
        importlib.import_module("minference.bench.e2e")
    except ImportError:
        stub = types.ModuleType("minference.bench.e2e")
        stub.add_e2e_parser = lambda subparsers: subparsers.add_parser("e2e")
        monkeypatch.setitem(sys.modules, "minference.bench.e2e", stub)
    return importlib.import_module("minference.bench.cli")


def test_parse_size_accepts_k_and_m(bench_cli):
    assert bench_cli.parse_size("8K") == 8192 and bench_cli.parse_size("1m") == 1 << 20
    assert bench_cli.parse_size("300") == 300
    with pytest.raises(ValueError, match="size"):
        bench_cli.parse_size("8KB")


def test_overrides_build_the_sweep(bench_cli):
    parser = argparse.ArgumentParser()
    bench_cli.add_kernels_arguments(parser)
    args = parser.parse_args(
        [
            "--sweep",
            "full",
            "--n",
            "1K,2K",
            "--batch",
            "1,4",
            "--patterns",
            "a_shape",
            "--dense-max-n",
            "none",
            "--no-flex",
            "--a-shape-pack",
            "1,2",
        ]
    )
    sweep = bench_cli.build_sweep(args)
    assert [(s.n, s.batch) for s in sweep.shapes] == [(1024, 1), (2048, 1), (1024, 4), (2048, 4)]
    assert [p.name for p in sweep.patterns] == ["a_shape"]
    assert sweep.dense_max_n is None and sweep.flex is False and sweep.a_shape_packs == (1, 2)
    assert sweep.flex_max_n == 128 * 1024, "options not given keep the sweep's values"
    full = bench_cli.build_sweep(parser.parse_args(["--sweep", "full"]))
    assert full.a_shape_packs == (None,), "the library's choice by default"
    with pytest.raises(ValueError, match="a_shape_packs must list sizes among"):
        bench_cli.build_sweep(parser.parse_args(["--sweep", "full", "--a-shape-pack", "3"]))


def test_block_sparse_budgets_replace_the_sweeps_in_place(bench_cli):
    from minference.patterns import BlockSparse

    parser = argparse.ArgumentParser()
    bench_cli.add_kernels_arguments(parser)
    sweep = bench_cli.build_sweep(parser.parse_args(["--sweep", "full", "--block-sparse", "100:64,50:128"]))
    assert [p.name for p in sweep.patterns] == ["vertical_slash", "block_sparse", "block_sparse", "a_shape"]
    assert sweep.patterns[1:3] == (BlockSparse(top_k=100, block_size=64), BlockSparse(top_k=50, block_size=128))
    only = bench_cli.build_sweep(parser.parse_args(["--block-sparse", "8:128", "--patterns", "block_sparse"]))
    assert only.patterns == (BlockSparse(top_k=8, block_size=128),)
    for bad in ("100", "100:", "0:64", "a:64"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--block-sparse", bad])
    with pytest.raises(ValueError, match="block_size must be one of"):
        bench_cli.build_sweep(parser.parse_args(["--block-sparse", "4:48"]))


def test_bench_kernels_smoke_on_cpu(bench_cli, tmp_path, capsys):
    code = bench_cli.main(
        [
            "kernels",
            "--sweep",
            "smoke",
            "--n",
            "128",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
            "--patterns",
            "vertical_slash,block_sparse,a_shape",
            "--index-sets",
            "local_heavy,measured",
            "--no-progress",
            "--warmup",
            "0",
            "--min-reps",
            "1",
            "--max-reps",
            "1",
            "--target-seconds",
            "0.001",
            "--a-shape-pack",
            "1,2",
        ]
    )
    assert code == 0
    document = json.loads((tmp_path / "kernels.json").read_text())
    assert document["complete"] is True and document["machine"]["gpu"].startswith("CPU")
    rows = document["rows"]
    assert {(r["method"], r["pattern"], r["index_set"]) for r in rows} == {
        ("sdpa", "dense", "–"),
        ("minference", "vertical_slash", "local_heavy"),
        ("minference", "vertical_slash", "measured"),
        ("minference", "block_sparse", "local_heavy"),
        ("minference", "block_sparse", "measured"),
        ("minference", "a_shape", "static, gqa_pack=1"),
        ("minference", "a_shape", "static, gqa_pack=2"),
    }
    assert all(r["status"] == "ok" and r["ms"] > 0 and r["density"] > 0 for r in rows), rows
    assert (tmp_path / "kernels.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "kernels.md").read_text()
    assert table in capsys.readouterr().out
    assert "| 128 | 1 | minference | vertical_slash |" in table


def test_bench_is_a_subcommand_with_kernels_and_e2e(bench_cli):
    parser = argparse.ArgumentParser(prog="minference")
    bench_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", "kernels", "--sweep", "smoke"])
    assert args.run is bench_cli.run_kernels
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "nope"])
