"""The layers of docs/ARCHITECTURE.md hold: heavy libraries each package loads, who imports whom, no cycles.

Loading is measured by importing every module of a package in a fresh interpreter and reading
``sys.modules``; imports are read from the source with ``ast`` (in functions too, but not under
``if TYPE_CHECKING:``), so a lazy import that breaks a rule is caught before it ever runs. The
``videorec`` entry point (``pipeline/cli.py``) imports each subcommand's module by name when it runs;
those names are a literal table, ``SUBCOMMANDS``, read here with ``ast`` as edges of the graph.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("blobstore", "dataformat", "logsetup", "pipeline", "transforms", "trainer")
BLOBSTORE = "blobstore"  # the leaf every package may import: files by URL, the GCS client, retries
DATAFORMAT = "dataformat"  # the dataset format and the one manifest reader: only blobstore below it
LOGSETUP = "logsetup"  # the leaf every command may import: how videorec logs
COMMAND_TABLE = "pipeline.cli"  # the entry point; its SUBCOMMANDS names the module of each command
GCS_CLIENT_MODULE = "blobstore.gcs"  # the one module that imports google.cloud.storage


def project_modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` under each of ``packages`` in ``root``."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (imports there never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            skipped.update(id(child) for statement in node.body for child in ast.walk(statement))
    return skipped


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules its import statements name (``from a import b`` names ``a.b``
    when that is a module, else ``a``; ``import a.b.c`` names the longest prefix that is a module)."""
    modules = project_modules(root, packages)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skipped = _type_checking_only(tree)
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    prefixes = (".".join(parts[:k]) for k in range(len(parts), 0, -1))
                    targets.update(next(([p] for p in prefixes if p in modules), []))
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, node.module] if node.module else base)
                for alias in node.names:
                    if f"{module}.{alias.name}" in modules:
                        targets.add(f"{module}.{alias.name}")
                    elif module in modules:
                        targets.add(module)
        graph[name] = targets - {name}
    return graph


def command_table(root: Path) -> dict[str, str]:
    """Subcommand -> the module ``pipeline/cli.py`` imports to run it, read from its ``SUBCOMMANDS``
    (a literal ``{name: (module, help)}``; anything else fails here, so no import escapes the graph)."""
    tree = ast.parse((root / "pipeline" / "cli.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "SUBCOMMANDS" for t in targets):
                return {name: module for name, (module, _) in ast.literal_eval(node.value).items()}
    raise AssertionError("pipeline/cli.py has no literal SUBCOMMANDS table")


def graph_with_commands(root: Path) -> dict[str, set[str]]:
    """:func:`import_graph` plus the entry point's edges to the module of each subcommand."""
    graph = import_graph(root)
    graph[COMMAND_TABLE] = graph[COMMAND_TABLE] | set(command_table(root).values())
    return graph


def external_imports(path: Path) -> set[str]:
    """Every dotted name the absolute import statements of ``path`` name, outside ``if TYPE_CHECKING:``
    (``from a.b import c`` names ``a.b`` and ``a.b.c``; ``import a.b`` names ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped = _type_checking_only(tree)
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules_importing(library: str, root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """The project modules whose import statements name ``library`` or one of its modules."""
    return sorted(
        name
        for name, path in project_modules(root, packages).items()
        if any(_in(imported, library) for imported in external_imports(path))
    )


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every set of modules that import each other, directly or through others (strongly connected
    components with more than one module, Tarjan's algorithm), each sorted; sorted by first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def loaded_after_importing(modules: list[str]) -> set[str]:
    """``sys.modules`` of a fresh interpreter after importing ``modules``."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


# package -> (a library it must load, which shows the import worked; libraries it must not load;
#             project packages it must not load)
BOUNDARIES = {
    BLOBSTORE: (
        "urllib.request",
        {"apache_beam", "torch", "torchvision", "av", "google.cloud.storage"},
        {"pipeline", "transforms", "trainer", LOGSETUP},
    ),
    LOGSETUP: (
        "logging",
        {"apache_beam", "torch", "torchvision", "av", "pyarrow"},
        {"pipeline", "transforms", "trainer"},
    ),
    "pipeline": ("apache_beam", {"torch", "torchvision"}, {"trainer"}),
    "transforms": ("apache_beam", {"torch", "torchvision"}, {"pipeline", "trainer"}),
    "transforms.decode": ("av", {"apache_beam", "torch", "torchvision"}, {"pipeline", "trainer"}),
    "trainer": ("torch", {"apache_beam"}, {"pipeline", "transforms"}),
    DATAFORMAT: (
        "pyarrow",
        {"apache_beam", "torch", "torchvision", "av", "google.cloud.storage"},
        {"pipeline", "transforms", "trainer", LOGSETUP},
    ),
}


@pytest.mark.parametrize("package", sorted(BOUNDARIES))
def test_importing_a_package_loads_only_what_its_layer_may(package):
    expected, forbidden_libraries, forbidden_packages = BOUNDARIES[package]
    modules = [name for name in project_modules(REPO_ROOT, PACKAGES) if _in(name, package)]
    loaded = loaded_after_importing(modules)
    assert set(modules) <= loaded and expected in loaded
    assert sorted(lib for lib in forbidden_libraries if lib in loaded) == []
    assert sorted(m for m in loaded if any(_in(m, p) for p in forbidden_packages)) == []
    if package == "transforms.decode":
        assert sorted(m for m in loaded if _in(m, "transforms") and not _in(m, package)) == ["transforms"]


def test_imports_point_down_the_layers():
    graph = graph_with_commands(REPO_ROOT)
    assert graph["transforms.decode.pyav_backend"] >= {"transforms.decode.types"}  # the reader sees edges
    trainer_commands = {m for m in command_table(REPO_ROOT).values() if _in(m, "trainer")}
    assert trainer_commands and trainer_commands <= graph[COMMAND_TABLE]  # the table's edges are read
    wrong = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if _in(target, LOGSETUP):
                allowed = not (_in(module, BLOBSTORE) or _in(module, DATAFORMAT))
            elif _in(module, DATAFORMAT):
                allowed = _in(target, DATAFORMAT) or _in(target, BLOBSTORE)
            elif _in(module, BLOBSTORE) or _in(module, LOGSETUP):
                allowed = _in(target, BLOBSTORE) and not _in(module, LOGSETUP)
            elif module == COMMAND_TABLE:  # the entry point runs the trainer's commands, nothing else of it
                allowed = not _in(target, "trainer") or target in trainer_commands
            elif _in(module, "transforms.decode"):
                allowed = _in(target, "transforms.decode") or _in(target, BLOBSTORE)
            elif _in(module, "transforms"):
                allowed = any(_in(target, p) for p in ("transforms", DATAFORMAT, BLOBSTORE))
            elif _in(module, "trainer"):
                allowed = any(_in(target, p) for p in ("trainer", DATAFORMAT, BLOBSTORE))
            else:
                allowed = not _in(target, "trainer")
            if not allowed:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_the_decoder_imports_nothing_of_transforms_outside_decode():
    graph = import_graph(REPO_ROOT)
    reaching_out = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if _in(module, "transforms.decode")
        for target in targets
        if _in(target, "transforms") and not _in(target, "transforms.decode")
    )
    assert reaching_out == []
    assert "blobstore.ranged_reads" in graph["transforms.decode.video_source"]  # gs:// videos: the leaf


def test_only_the_blob_store_imports_the_gcs_client_library():
    assert modules_importing("google.cloud.storage", REPO_ROOT) == [GCS_CLIENT_MODULE]


def test_import_graph_reader_and_cycle_finder_on_a_small_tree(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from .sub import c\n")
    (package / "sub" / "__init__.py").write_text("from pkg.sub.c import thing\n")
    (package / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nimport pkg.a\nif TYPE_CHECKING:\n    from pkg.sub import d\nthing = 1\n"
    )
    (package / "sub" / "d.py").write_text("import pkg.sub.c\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub.c"},
        "pkg.sub": {"pkg.sub.c"},
        "pkg.sub.c": {"pkg.a"},
        "pkg.sub.d": {"pkg.sub.c"},
    }
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    (package / "e.py").write_text("def client():\n    from google.cloud import storage\n")
    (package / "f.py").write_text("import google.cloud.storage.retry\nimport google.cloud.storage_other\n")
    (package / "g.py").write_text("from google.cloud.storage import Client\n")
    assert modules_importing("google.cloud.storage", tmp_path, ("pkg",)) == ["pkg.e", "pkg.f", "pkg.g"]


def test_no_import_cycles():
    assert find_cycles(graph_with_commands(REPO_ROOT)) == []


def test_every_command_in_the_table_is_a_module_with_main():
    modules = project_modules(REPO_ROOT, PACKAGES)
    table = command_table(REPO_ROOT)
    assert {"ingest", "train"} <= set(table)
    for name, module in table.items():
        tree = ast.parse(modules[module].read_text(encoding="utf-8"))
        assert "main" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, (name, module)


def test_the_command_table_reader_on_a_small_tree(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "cli.py").write_text(
        'SUBCOMMANDS: dict = {"a": ("pkg.a", "help"), "b": ("trainer.b", "help")}\n'
    )
    assert command_table(tmp_path) == {"a": "pkg.a", "b": "trainer.b"}
    (tmp_path / "pipeline" / "cli.py").write_text('SUBCOMMANDS = dict(a=("pkg.a", "help"))\n')
    with pytest.raises(ValueError):
        command_table(tmp_path)


MAX_MODULE_LINES = 400


def test_no_module_is_longer_than_400_lines():
    long = {}
    for path in project_modules(REPO_ROOT, PACKAGES).values():
        name = path.relative_to(REPO_ROOT).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            long[name] = lines
    assert long == {}


def unnamed_modules(root: Path, doc: str) -> list[str]:
    """Modules of the packages whose file name (``x.py``) or module name (``x``, in backticks) the
    architecture document never mentions."""
    missing = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if path.name == "__init__.py":
                continue
            if path.name not in doc and f"`{path.stem}`" not in doc:
                missing.append(path.relative_to(root).as_posix())
    return missing


def test_the_architecture_document_names_every_module(tmp_path):
    doc = (REPO_ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert unnamed_modules(REPO_ROOT, doc) == []
    planted = tmp_path / "pipeline" / "unlisted_room.py"  # the check itself catches a new module
    planted.parent.mkdir()
    planted.write_text("")
    assert unnamed_modules(tmp_path, doc) == ["pipeline/unlisted_room.py"]
