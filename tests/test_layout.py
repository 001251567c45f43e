"""Architecture guards: no module imports a layer above its own, and no source file grows past 400 lines
unless it is listed below with a reason."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "wrcup"

# The layers of wrcup, bottom to top (docs/DESIGN.md). A module may import from its own package and from lower
# layers; packages in the same layer are independent of each other (none imports another).
#   private base modules (_checks, _io; then _cache, which writes through _io, and _registry, whose lookup
#   errors come from _checks)
#   →  ops (functional core)  →  nn (operator modules + registry)
#   →  data (readers and the one image preparation, on the base only)
#   →  backbones, viz (backbones resize through data.prep)  →  models (networks + the backbone bundle)
#   →  train, eval (both on models, backbones and data)  →  cli and the package root (wrcup.load)
LAYERS = (
    ("_checks", "_io"),
    ("_cache", "_registry"),
    ("ops",),
    ("nn",),
    ("data",),
    ("backbones", "viz"),
    ("models",),
    ("train", "eval"),
    ("cli", "wrcup"),
)
# Names any layer may import from the package root: the version string only.
ROOT_NAMES_FOR_ALL = {"__version__"}
# (importing file, imported package) pairs allowed to break the order, each with its reason.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()

MAX_LINES = 400
# Files allowed over MAX_LINES, with the reason.
LONG_FILES = {
    "ops/closed_form.py": "one concern: the closed-form FFT solves (Converse2D and both WRC closed forms) with the "
                          "hand-written backward they share; most of its length is the derivation in the docstrings",
    "ops/exact.py": "one concern: the exact weighted least-squares solve (PCG, its preconditioner and the implicit "
                    "backward)",
    "models/authors.py": "one concern: reading the authors' torch.save archives with a restricted unpickler",
}


def _layer_of(package: str) -> int:
    for i, names in enumerate(LAYERS):
        if package in names:
            return i
    raise AssertionError(f"package wrcup.{package} is in no layer of tests/test_layout.py: add it to LAYERS")


def _source_files():
    return sorted(p for p in SRC.rglob("*.py"))


def _package(path: Path) -> str:
    """The top-level package of a source file ("wrcup" for the root's own modules)."""
    parts = path.relative_to(SRC).parts
    if len(parts) == 1:
        return "wrcup" if parts[0] == "__init__.py" else parts[0][:-3]
    return parts[0]


def _imported_packages(path: Path, src: Path = SRC):
    """(line, top-level wrcup package, imported names) for every import of wrcup code in ``path`` (under the
    package folder ``src``): module level, function-local and relative imports alike."""
    parts = path.relative_to(src).with_suffix("").parts
    module = ("wrcup",) + (parts[:-1] if parts[-1] == "__init__" else parts)
    package_path = module if parts[-1] == "__init__" else module[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [(alias.name.split("."), []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level:
                base = list(package_path[:len(package_path) - node.level + 1])
                targets = [(base + (node.module.split(".") if node.module else []), names)]
            else:
                targets = [((node.module or "").split("."), names)]
        else:
            continue
        for dotted, names in targets:
            if dotted[0] != "wrcup":
                continue
            if len(dotted) == 1:  # from wrcup import x / from .. import x: x is a package or a root name
                for name in names:
                    yield node.lineno, (name if (src / name).is_dir() or (src / f"{name}.py").is_file()
                                        else "wrcup"), [name]
            else:
                yield node.lineno, dotted[1], names


def test_the_layer_table_covers_every_package():
    for path in _source_files():
        _layer_of(_package(path))


def test_no_module_imports_a_layer_above_its_own():
    violations, used_exceptions = [], set()
    for path in _source_files():
        rel = path.relative_to(SRC).as_posix()
        own = _package(path)
        for line, imported, names in _imported_packages(path):
            if imported == own or (imported == "wrcup" and set(names) <= ROOT_NAMES_FOR_ALL):
                continue
            if _layer_of(imported) < _layer_of(own):
                continue
            if (rel, imported) in KNOWN_EXCEPTIONS:
                used_exceptions.add((rel, imported))
                continue
            where = "a layer above" if _layer_of(imported) > _layer_of(own) else "a package of its own layer"
            violations.append(f"src/wrcup/{rel}:{line} ({own}) imports {where}: wrcup.{imported}")
    assert not violations, "\n".join(violations)
    assert used_exceptions == KNOWN_EXCEPTIONS, f"stale KNOWN_EXCEPTIONS: {KNOWN_EXCEPTIONS - used_exceptions}"


def test_the_layer_check_sees_local_and_relative_imports(tmp_path):
    # the guard itself: function-local, relative and absolute imports of higher layers are all seen
    fake = tmp_path / "wrcup"
    (fake / "ops").mkdir(parents=True)
    (fake / "models").mkdir()
    (fake / "ops" / "bad.py").write_text("from . import _spectral\nfrom .. import __version__, models\n"
                                         "def f():\n    from ..train.checkpoint import x\n    import wrcup.cli.main\n")
    found = [(line, package) for line, package, _ in _imported_packages(fake / "ops" / "bad.py", fake)]
    assert found == [(1, "ops"), (2, "wrcup"), (2, "models"), (4, "train"), (5, "cli")]


def test_no_source_file_is_longer_than_400_lines_unless_listed():
    lengths = {p.relative_to(SRC).as_posix(): len(p.read_text().splitlines()) for p in _source_files()}
    too_long = {rel: n for rel, n in lengths.items() if n > MAX_LINES and rel not in LONG_FILES}
    assert not too_long, f"files over {MAX_LINES} lines (split them, or list them in LONG_FILES with a reason): {too_long}"
    stale = sorted(rel for rel in LONG_FILES if lengths.get(rel, 0) <= MAX_LINES)
    assert not stale, f"LONG_FILES lists files that are no longer over {MAX_LINES} lines (remove them): {stale}"
