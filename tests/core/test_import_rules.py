"""The library imports only downward (docs/architecture.md, "What may import what"): every import,
at module level or inside a function, of every .py under retrieval/, onerec/ and rqvae/ stays within
what its layer may use.

    retrieval.core          nothing of the project outside core
    retrieval.data          core
    retrieval.evaluation    core, data
    retrieval.negatives     core, data                      (the FAISS item index, similar-item tables)
    retrieval.scorers       core, data, evaluation, negatives
    retrieval.baselines     core, data, evaluation, negatives
    rqvae                   core, data, evaluation, negatives           (knows nothing of onerec)
    onerec                  core, data, evaluation, negatives, rqvae.artifact (the stage-1 contract)
    retrieval.compare       anything in the library: it runs and composes both paths

A layer may always import itself. A failure names file:line and the import at fault.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("retrieval", "onerec", "rqvae")
CORE, DATA, EVALUATION, NEGATIVES = ("retrieval.core", "retrieval.data", "retrieval.evaluation",
                                     "retrieval.negatives")
SCORERS, BASELINES, COMPARE = "retrieval.scorers", "retrieval.baselines", "retrieval.compare"
LAYERS = (CORE, DATA, EVALUATION, NEGATIVES, SCORERS, BASELINES, COMPARE, "rqvae", "onerec")
SHARED = {CORE, DATA, EVALUATION, NEGATIVES}
# Layer -> the modules (dotted prefixes) it may import besides its own.
MAY_IMPORT = {
    CORE: set(),
    DATA: {CORE},
    EVALUATION: {CORE, DATA},
    NEGATIVES: {CORE, DATA},
    SCORERS: SHARED,
    BASELINES: SHARED,
    "rqvae": SHARED,
    "onerec": SHARED | {"rqvae.artifact"},
    COMPARE: set(LAYERS),
}
# Edges across the rule that cannot go yet: {(file, imported module): reason}; keep it empty.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to; the bare `retrieval` package (which re-exports
    only RecError from core) counts as core. None for modules outside the project."""
    if module == "retrieval":
        return CORE
    return next((layer for layer in LAYERS if within(module, layer)), None)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names an Import / ImportFrom node pulls in; `from pkg import sub` yields pkg.sub so
    that `from retrieval import scorers` counts as an import of retrieval.scorers."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:                                          # relative: resolve against the package
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    return [f"{base}.{a.name}" if a.name != "*" else base for a in node.names]


def violations(path: Path, root: Path = ROOT) -> list[str]:
    """'file:line: import ...  (layer may not import module)' for each import against the rule."""
    module = module_name(path, root)
    own = layer_of(module)
    allowed = MAY_IMPORT[own] | {own}
    rel = path.relative_to(root).as_posix()
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
        names = ["retrieval.core" if n == "retrieval" else n
                 for n in imported_modules(node, module, path.name == "__init__.py")]
        bad = [n for n in names if layer_of(n) is not None
               and not any(within(n, p) for p in allowed)
               and not any(within(n, m) for f, m in EXCEPTIONS if f == rel)]
        if bad:
            found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}  ({own} may not import {bad[0]})")
    return found


FILES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_every_library_file_is_in_a_layer():
    assert FILES
    assert [p for p in FILES if layer_of(module_name(p)) is None] == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_follow_the_layers(path):
    found = violations(path)
    assert not found, "imports against the layer rule (tests/core/test_import_rules.py):\n" + "\n".join(found)


def test_the_exceptions_are_still_needed():
    """An exception nobody uses any more is removed from the list, not left to allow a new edge."""
    for (rel, target), _ in EXCEPTIONS.items():
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
        names = {n for node in ast.walk(tree)
                 for n in imported_modules(node, module_name(ROOT / rel), False)}
        assert any(within(n, target) for n in names), (rel, target)


@pytest.mark.parametrize("source, expected", [
    ("from retrieval.scorers.losses import ScorerLoss", ["retrieval.scorers.losses.ScorerLoss"]),
    ("import retrieval.negatives.samplers", ["retrieval.negatives.samplers"]),
    ("from retrieval import scorers", ["retrieval.scorers"]),
    ("from .. import scorers", ["retrieval.scorers"]),
    ("from .item_index import ItemIndex", ["retrieval.negatives.item_index.ItemIndex"]),
])
def test_imports_are_resolved_to_dotted_names(source, expected):
    node = ast.parse(source).body[0]
    assert imported_modules(node, "retrieval.negatives.samplers", False) == expected


def test_a_function_level_import_against_the_rule_is_reported(tmp_path):
    (tmp_path / "onerec").mkdir()
    bad = tmp_path / "onerec" / "bad.py"
    bad.write_text("def f():\n    import retrieval.scorers.trainer  # noqa: F401\n")
    assert violations(bad, tmp_path) == ["onerec/bad.py:2: import retrieval.scorers.trainer  "
                                         "(onerec may not import retrieval.scorers.trainer)"]


def test_onerec_reads_only_the_semantic_id_artifact_of_stage_one(tmp_path):
    (tmp_path / "onerec").mkdir()
    bad = tmp_path / "onerec" / "bad.py"
    bad.write_text("from rqvae.artifact import SemanticIds\nfrom rqvae.embeddings import item_embeddings\n")
    assert violations(bad, tmp_path) == ["onerec/bad.py:2: from rqvae.embeddings import item_embeddings  "
                                         "(onerec may not import rqvae.embeddings.item_embeddings)"]
