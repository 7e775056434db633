"""One name, one function: a module-level function's name is defined once in the project's packages.

The rule, checked on the source with ``ast``: across ``blobstore/``, ``logsetup/``, ``pipeline/``,
``transforms/`` and ``trainer/`` (and ``dataformat/`` once it exists), no two module-level functions,
public or private, share a name, whether their bodies differ (two meanings) or not (a copy), and no
module-level function is named like another module of these packages (``encode_items`` the
function against ``transforms/encode_items.py``; ``reconcile`` in ``transforms/reconcile.py`` is its
module's own function). A reader who meets a name then knows which function it is.

Not covered, because their names are scoped: methods, named within their class (classes that share
a method name implement a common protocol: a DoFn's ``setup`` / ``process``, a PTransform's
``expand``, a torch module's ``forward``, a file's ``read``, ``__init__``...), and functions nested
in another function. The command modules share the names of the command protocol
(:data:`COMMAND_PROTOCOL`: each ``videorec`` subcommand's module exposes ``main(argv)``, and builds
its flags with ``build_parser()``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("blobstore", "dataformat", "logsetup", "pipeline", "transforms", "trainer")
COMMAND_PROTOCOL = {"main", "build_parser", "config_from_args"}
"""Names every command module may define: its entry point, its flags, the config they make."""


def module_functions(root: Path, packages=PACKAGES) -> dict[str, list[tuple[str, str]]]:
    """Function name -> ``(module path, ast dump of the body)`` of each module-level definition."""
    found = defaultdict(list)
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in tree.body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    body = node.body[1:] if ast.get_docstring(node) else node.body
                    dump = ast.dump(ast.Module(body=body, type_ignores=[]))
                    found[node.name].append((path.relative_to(root).as_posix(), dump))
    return found


def module_names(root: Path, packages=PACKAGES) -> dict[str, str]:
    """Last part of each module's name -> its path (``encode_items`` -> ``transforms/encode_items.py``)."""
    return {
        path.stem: path.relative_to(root).as_posix()
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
        if path.stem != "__init__"
    }


def name_problems(root: Path, packages=PACKAGES, allowed=frozenset()) -> list[str]:
    """One line per name defined twice (or named like a module), with where and whether bodies differ."""
    problems = []
    modules = module_names(root, packages)
    for name, definitions in sorted(module_functions(root, packages).items()):
        if name in allowed:
            continue
        if len(definitions) > 1:
            bodies = "different bodies" if len({dump for _, dump in definitions}) > 1 else "copies"
            problems.append(f"{name}: {bodies} in {', '.join(path for path, _ in definitions)}")
        if name in modules and any(Path(path).stem != name for path, _ in definitions):
            problems.append(f"{name}: a function in {definitions[0][0]} and the module {modules[name]}")
    return problems


def test_each_module_level_function_name_is_defined_once():
    assert name_problems(REPO_ROOT, allowed=COMMAND_PROTOCOL) == []


def test_the_checker_finds_two_meanings_copies_and_module_names(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text(
        'def short(e):\n    """Docs."""\n    return str(e)[:10]\n\n'
        "def by_reason(c):\n    return sorted(c)\n\n"
        "def main():\n    pass\n\n"
        "def encode():\n    pass\n\n"
        "def a():\n    pass\n\n"
        "class Fn:\n    def process(self):\n        def local():\n            pass\n"
    )
    (package / "sub" / "b.py").write_text(
        'def short(e):\n    """Other docs."""\n    return str(e)[:10]\n\n'
        "def by_reason(c):\n    return sorted(c, reverse=True)\n\n"
        "def main():\n    pass\n\n"
        "class Other:\n    def process(self):\n        return 1\n\n    def local(self):\n        pass\n"
    )
    (package / "encode.py").write_text("")
    assert name_problems(tmp_path, ("pkg",), allowed={"main"}) == [
        "by_reason: different bodies in pkg/a.py, pkg/sub/b.py",
        "encode: a function in pkg/a.py and the module pkg/encode.py",
        "short: copies in pkg/a.py, pkg/sub/b.py",
    ]
    assert "main: copies in pkg/a.py, pkg/sub/b.py" in name_problems(tmp_path, ("pkg",))
