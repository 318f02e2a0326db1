"""The tests live in one folder per area; the helpers they share (``helpers``, ``evals_helpers``,
``search_planted``) stay here and import by name from every area."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
