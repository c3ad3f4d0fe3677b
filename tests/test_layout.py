"""The package's shape: every model family registered, no import cycles, no dangling refs.

These read the source (AST), so they are fast and need no TensorFlow.
"""

import ast
import os
import pkgutil
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "kdzoo")


def _modules():
    """``{dotted name: path}`` of every module under kdzoo/."""
    found = {}
    for dirpath, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return found


def _imports(path, name, modules):
    """kdzoo modules imported anywhere in the file (top level and inside functions)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            # Importing a package's submodule runs the package __init__ too, but an
            # edge to the package itself is only a cycle risk if it is the target.
            if t and t != name and t != "kdzoo":
                out.add(t)
    return out


def find_cycles(graph):
    """Each import cycle of ``{module: {imported}}`` as a path that ends where it starts."""
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_no_import_cycles_in_kdzoo():
    modules = _modules()
    graph = {m: _imports(p, m, modules) for m, p in modules.items()}
    # Edges from a package to its own submodules are how packages expose their API.
    graph = {m: {t for t in ts if not (m == t.rpartition(".")[0] and
                                        modules[m].endswith("__init__.py"))}
             for m, ts in graph.items()}
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_model_module_is_imported_and_registers_an_architecture():
    import kdzoo
    from kdzoo.zoo import registry
    names = [m.name for m in pkgutil.iter_modules(kdzoo.models.__path__)
             if m.name not in ("common",)]
    registered = {a.builder.__module__ for a in registry.architectures().values()}
    missing = [n for n in names if f"kdzoo.models.{n}" not in registered]
    assert not missing, f"kdzoo/models modules registering no architecture: {missing}"


def test_no_reference_to_files_outside_the_repo():
    offenders = []
    for dirpath, _, files in os.walk(ROOT):
        if any(part.startswith(".") for part in os.path.relpath(dirpath, ROOT).split(os.sep)
               if part != "."):
            continue
        for f in files:
            if f.endswith((".py", ".md", ".json", ".ini", ".cfg")) or f == "Makefile":
                path = os.path.join(dirpath, f)
                if path == os.path.abspath(__file__):
                    continue
                text = open(path, encoding="utf-8", errors="replace").read()
                if re.search(r"DESIGN\.md|\.\./shared|/work/shared", text):
                    offenders.append(os.path.relpath(path, ROOT))
    assert not offenders, f"files pointing outside the repo: {offenders}"


def long_files(paths, limit, root=ROOT):
    """``{relative path: lines}`` of the files over ``limit`` lines."""
    return {os.path.relpath(p, root): n for p in paths
            if (n := sum(1 for _ in open(p, encoding="utf-8"))) > limit}


@pytest.mark.parametrize("limit", [400])
def test_no_library_file_over_the_line_limit(limit):
    long = long_files(_modules().values(), limit)
    assert not long, f"library files over {limit} lines (split them by idea): {long}"


def test_recipes_are_configs_no_recipe_function_over_15_lines():
    import ast
    import glob
    long = []
    for path in sorted(glob.glob(os.path.join(ROOT, "recipes", "*.py"))):
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 15:
                long.append(f"{os.path.basename(path)}:{node.name}")
    assert not long, f"recipe functions over 15 lines (move the logic into kdzoo): {long}"


def test_a_built_package_carries_the_top_level_model_cards(tmp_path):
    """The cards live in the repository's ``pretrained/``; ``setup.py`` must install them as
    ``kdzoo/pretrained`` (where :mod:`kdzoo.zoo.registry` looks first), weights included."""
    import subprocess
    import sys
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    shipped = {f for f in os.listdir(os.path.join(ROOT, "pretrained"))
               if f.endswith((".json", ".weights.h5"))}
    assert shipped and any(f.endswith(".weights.h5") for f in shipped)
    assert set(os.listdir(tmp_path / "kdzoo" / "pretrained")) >= shipped
    assert not os.path.exists(os.path.join(PACKAGE, "pretrained")), \
        "model cards belong in the top-level pretrained/, not inside kdzoo/"


def init_logic(root):
    """``{package __init__.py: [line of each statement that is not a re-export]}`` under root.

    A package's ``__init__`` is its index: imports, ``__all__`` and a docstring. Logic there
    runs on every ``import kdzoo.x.y`` and hides from anyone reading the submodules, so any
    other statement (a def, a class, a call, an assignment other than ``__all__`` and
    ``__version__``) is named.
    """
    found = {}
    for dirpath, _, files in os.walk(root):
        if "__init__.py" not in files:
            continue
        path = os.path.join(dirpath, "__init__.py")
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        bad = []
        for i, node in enumerate(tree.body):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, str):
                continue
            if isinstance(node, (ast.Assign, ast.AugAssign)) and all(
                    isinstance(t, ast.Name) and t.id in ("__all__", "__version__")
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])):
                continue
            bad.append(node.lineno)
        if bad:
            found[os.path.relpath(path, root)] = bad
    return found


# Named exceptions, each with its reason; anything else with logic in an __init__ fails.
INIT_EXCEPTIONS = {
    os.path.join("models", "__init__.py"):
        "imports every model family module so each registers its architectures: "
        "a new family is one file, with no list to edit (see "
        "test_every_model_module_is_imported_and_registers_an_architecture)",
}


def test_each_package_init_only_re_exports():
    found = {k: v for k, v in init_logic(PACKAGE).items() if k not in INIT_EXCEPTIONS}
    assert found == {}, (
        "package __init__.py files with logic (move it into a submodule and re-export it): "
        f"{found}")
    stale = set(INIT_EXCEPTIONS) - set(init_logic(PACKAGE))
    assert not stale, f"INIT_EXCEPTIONS entries with no logic left (remove them): {stale}"


def test_the_init_checker_names_a_def_in_a_synthetic_package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Doc."""\nfrom .sub import x\n__all__ = ["x"]\n')
    (pkg / "sub" / "__init__.py").write_text("import os\n\ndef helper():\n    return 1\n")
    assert init_logic(str(pkg)) == {os.path.join("sub", "__init__.py"): [3]}


# The layers, lowest first, derived from the imports at 5908c3b. A module's layer is the
# longest prefix listed; it may import only its own layer or lower ones.
LAYERS = [
    ["kdzoo.errors", "kdzoo.file_lock", "kdzoo.zoo.suggest"],   # suggest: stdlib only
    ["kdzoo.atomic"],
    ["kdzoo.data", "kdzoo.zoo.registry",     # registry: models register into it
     "kdzoo.zoo.preprocessing"],             # cards' protocols, from the data specs
    ["kdzoo.models"],
    ["kdzoo.optim"],
    ["kdzoo.distill"],
    ["kdzoo.zoo"],
    ["kdzoo.train"],
    ["kdzoo.evaluation", "kdzoo.callbacks"],
    ["kdzoo.cli", "kdzoo.__main__", "kdzoo"],
]
# Imports back up the layers that exist today, each named with its reason. Phase 2 of
# issue 26 (the method seam) is where these move down; a new one fails the test.
UPWARD_EXCEPTIONS = {
    ("kdzoo.distill._checks", "kdzoo.train.checkpointing"):
        "fit() puts the runner's StopOnNonFiniteLoss first (a function-level import)",
    ("kdzoo.distill.self_distill.exit_reporting", "kdzoo.train.distribute"):
        "exit reports write to the runner's per-worker subdirectory (function-level import)",
    ("kdzoo.distill.self_distill.exit_reporting", "kdzoo.train.fit"):
        "exit reports reuse fit's eval batches and resize (one evaluation path: issue 26 phase 2)",
    ("kdzoo.zoo.loader", "kdzoo.train.checkpointing"):
        "load() refuses weights with NaN/inf through the runner's non_finite_weights",
}


def layer_of(module, layers):
    best = max((p for row in layers for p in row
                if module == p or module.startswith(p + ".")), key=len, default=None)
    return None if best is None else next(i for i, row in enumerate(layers) if best in row)


def upward_imports(graph, layers):
    """``[(importer, imported)]`` where the imported module sits on a higher layer."""
    return sorted((m, t) for m, ts in graph.items() for t in ts
                  if layer_of(t, layers) > layer_of(m, layers))


def test_no_import_back_up_the_layers():
    modules = _modules()
    unplaced = [m for m in modules if layer_of(m, LAYERS) is None]
    assert not unplaced, f"modules on no layer (add them to LAYERS): {unplaced}"
    graph = {m: _imports(p, m, modules) for m, p in modules.items()}
    found = upward_imports(graph, LAYERS)
    assert [e for e in found if e not in UPWARD_EXCEPTIONS] == [], "imports back up the layers"
    stale = set(UPWARD_EXCEPTIONS) - set(found)
    assert not stale, f"UPWARD_EXCEPTIONS no longer needed (remove them): {stale}"


def test_the_layer_checker_names_an_import_up_on_a_synthetic_graph():
    layers = [["p.low"], ["p.high"]]
    assert upward_imports({"p.low.a": {"p.high.b"}, "p.high.b": {"p.low.c"}}, layers) == [
        ("p.low.a", "p.high.b")]


def test_the_cycle_checker_finds_a_cycle_on_a_synthetic_graph():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_line_cap_checker_names_a_long_file_in_tmp_path(tmp_path):
    (tmp_path / "short.py").write_text("x = 1\n" * 400)
    (tmp_path / "long.py").write_text("x = 1\n" * 401)
    paths = [str(tmp_path / "short.py"), str(tmp_path / "long.py")]
    assert long_files(paths, 400, root=str(tmp_path)) == {"long.py": 401}
