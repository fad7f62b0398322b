"""No unsafe deserialisation anywhere in the code: no pickle, `torch.load` only with
weights_only=True, `np.load` only with allow_pickle=False, no eval/exec, no yaml.load.

The scan reads the syntax tree, not the text, so `model.eval()` and `ast.literal_eval` are not
mistaken for the builtin `eval`, and the offending snippets quoted as strings in this file (for the
scanner's self-test) are not flagged either; that is why tests/ can be scanned too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("rqvae", "onerec", "retrieval", "scripts", "bench", "tests")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}


def _dotted(node: ast.AST) -> str:
    """'np.load' for the expression np.load; '' for anything that is not a dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _keyword_is(call: ast.Call, name: str, value) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
               for k in call.keywords)


def unsafe_uses(source: str, filename: str = "<snippet>") -> list[str]:
    """'file:line: what' for every unsafe load, pickle use, eval or exec in `source`."""
    out = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            out += [f"{where}: import {a.name}" for a in node.names
                    if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            out.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and "pickle" in node.attr.lower():
            out.append(f"{where}: .{node.attr}")                          # pd.read_pickle, to_pickle, ...
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
                out.append(f"{where}: {name}(")
            elif name.split(".")[0] in PICKLE_MODULES:
                out.append(f"{where}: {name}(")
            elif name == "torch.load" and not _keyword_is(node, "weights_only", True):
                out.append(f"{where}: torch.load( without weights_only=True")
            elif name == "torch.save":
                out.append(f"{where}: torch.save( (pickle-based; use safetensors)")
            elif name in ("np.load", "numpy.load") and not _keyword_is(node, "allow_pickle", False):
                out.append(f"{where}: {name}( without allow_pickle=False")
            elif name.startswith("yaml.") and last in ("load", "load_all", "unsafe_load", "full_load"):
                out.append(f"{where}: {name}( (use yaml.safe_load)")
            if _keyword_is(node, "allow_pickle", True):
                out.append(f"{where}: allow_pickle=True")
    return out


def python_files() -> list[Path]:
    files = [p for d in SCANNED for p in sorted((REPO / d).rglob("*.py"))]
    return [p for p in files if ".venv" not in p.parts]


def test_the_scanned_folders_hold_the_project_code():
    files = {str(p.relative_to(REPO)) for p in python_files()}
    assert {"retrieval/core/io.py", "retrieval/core/checkpoints.py", "rqvae/artifact.py", "onerec/trainer.py",
            "scripts/train_sasrec.py", "scripts/train_onerec.py"} <= files
    assert any(f.startswith("bench/") for f in files)


def test_no_unsafe_loading_in_the_code():
    offenders = [hit for p in python_files()
                 for hit in unsafe_uses(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))]
    assert offenders == [], "unsafe deserialisation / eval found:\n" + "\n".join(offenders)


@pytest.mark.parametrize("snippet,flag", [
    ("import pickle\n", "import pickle"),
    ("import pickle as pk\n", "import pickle"),
    ("from pickle import loads\n", "from pickle import"),
    ("import dill\n", "import dill"),
    ("x = pickle.loads(b)\n", "pickle.loads("),
    ("df = pd.read_pickle('f')\n", ".read_pickle"),
    ("sd = torch.load('m.pt')\n", "torch.load( without weights_only=True"),
    ("sd = torch.load('m.pt', weights_only=False)\n", "torch.load( without weights_only=True"),
    ("torch.save(model.state_dict(), 'm.pt')\n", "torch.save("),
    ("a = np.load('a.npy')\n", "np.load( without allow_pickle=False"),
    ("a = numpy.load('a.npy', allow_pickle=True)\n", "numpy.load( without allow_pickle=False"),
    ("np.save('a.npy', x, allow_pickle=True)\n", "allow_pickle=True"),
    ("y = eval(text)\n", "eval("),
    ("exec(code)\n", "exec("),
    ("cfg = yaml.load(f)\n", "yaml.load("),
])
def test_the_scanner_flags_an_offending_snippet(snippet, flag):
    hits = unsafe_uses(snippet)
    assert any(flag in h for h in hits), hits


@pytest.mark.parametrize("snippet", [
    "model.eval()\n",
    "import ast\nv = ast.literal_eval(s)\n",
    "sd = torch.load('m.pt', weights_only=True)\n",
    "a = np.load('a.npy', allow_pickle=False)\n",
    "cfg = yaml.safe_load(f)\n",
    "text = 'import pickle; eval(x)'\n",
    "from safetensors.torch import load_file\nt = load_file('m.safetensors')\n",
])
def test_the_scanner_accepts_safe_code(snippet):
    assert unsafe_uses(snippet) == []
