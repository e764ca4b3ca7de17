"""The package structure the project keeps: dependencies run one way, the codec needs numpy alone, and the
runtimes never load the training code or torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("codec", "runtime_edge", "runtime_server", "training", "export", "calibration", "benchmarks", "mantis_demo")
ALLOWED = {
    "codec": set(),
    "runtime_edge": {"codec"},
    "runtime_server": {"codec"},
    "training": {"codec", "runtime_edge"},  # the edge runtime's image decoding rule (to_rgb), one definition
    "export": {"codec", "runtime_edge", "runtime_server", "training"},
    "calibration": {"codec", "runtime_edge", "runtime_server", "training", "export"},
    # Benchmarks and measurement tools sit above the product; only the demo, which reports measurements, uses them.
    "benchmarks": {"codec", "runtime_edge", "runtime_server", "training", "export", "calibration"},
    "mantis_demo": {"codec", "runtime_edge", "runtime_server", "training", "export", "calibration", "benchmarks"},
}


def _imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def package_graph() -> dict[str, dict[str, list[str]]]:
    """``{package: {imported package: [files]}}`` over the project's own packages."""
    graph: dict[str, dict[str, list[str]]] = {p: {} for p in PACKAGES}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            for name in _imports(f) & set(PACKAGES) - {pkg}:
                graph[pkg].setdefault(name, []).append(str(f.relative_to(ROOT)))
    return graph


def test_dependencies_run_one_way() -> None:
    graph = package_graph()
    wrong = {pkg: {dep: files for dep, files in deps.items() if dep not in ALLOWED[pkg]} for pkg, deps in graph.items()}
    assert not any(wrong.values()), f"imports against the allowed direction: {wrong}"


def test_no_cycle_between_packages() -> None:
    graph = {pkg: set(deps) for pkg, deps in package_graph().items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(dep == goal or (dep not in seen and reaches(dep, goal, seen | {dep})) for dep in graph[start])

    cycles = [pkg for pkg in PACKAGES if reaches(pkg, pkg, {pkg})]
    assert not cycles, f"packages on an import cycle: {cycles}"


GRPC_MESSAGES = ROOT / "codec" / "kserve_grpc.py"
"""The gRPC messages compiled from ``codec/kserve_grpc.proto``: protobuf and grpcio-tools, for gRPC speakers only."""


def test_codec_needs_numpy_alone() -> None:
    third_party = set()
    for f in (ROOT / "codec").rglob("*.py"):
        if f != GRPC_MESSAGES:
            third_party |= {n for n in _imports(f) if n not in sys.stdlib_module_names and n != "codec"}
    assert third_party == {"numpy"}, third_party
    grpc_needs = {n for n in _imports(GRPC_MESSAGES) if n not in sys.stdlib_module_names and n != "codec"}
    assert grpc_needs == {"google", "grpc_tools"}, grpc_needs
    assert "kserve_grpc" not in (ROOT / "codec" / "__init__.py").read_text(), "import codec must not need protobuf"


def test_runtimes_load_neither_training_nor_torch() -> None:
    """Importing the device side and the server in a fresh interpreter where torch cannot be imported."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"  # any 'import torch' now fails
        "import codec, codec.bundle, codec.manifest, codec.wire, runtime_edge.client, runtime_edge.run, runtime_edge.transport.http\n"
        "import runtime_server.serve\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('training', 'export', 'calibration', 'mantis_demo'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_entry_points_name_existing_mains() -> None:
    """Every console script names a module-level ``main`` of a file that is also run as documented
    (``python export/split.py``); read with ast, so the check costs no heavy import."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert {"mantis-train", "mantis-split", "mantis-check", "mantis-serve", "mantis-edge"} <= set(scripts)
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.is_file(), f"{name}: {path} is gone"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert any(isinstance(n, ast.FunctionDef) and n.name == attr for n in tree.body), f"{name}: {path} has no {attr}()"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def _project_imports(path: Path) -> list[tuple[str, list[str], bool]]:
    """``(module, imported names, at module level)`` for every import of a project module in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] in PACKAGES:
            found.append((node.module, [a.name for a in node.names], id(node) in top))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], id(node) in top) for a in node.names if a.name.split(".")[0] in PACKAGES]
    return found


def test_server_modules_import_each_other_one_way_at_module_level() -> None:
    """Within ``runtime_server`` no file imports another lazily (inside a function) or a private name of
    another, and no two files import each other, directly or around a circle."""
    files = {_module_name(f): f for f in sorted((ROOT / "runtime_server").glob("*.py"))}
    graph: dict[str, set[str]] = {}
    wrong = []
    for name, path in files.items():
        graph[name] = set()
        for module, names, top in _project_imports(path):
            target = next((m for m in (module, *(f"{module}.{n}" for n in names)) if m in files and m != name), None)
            if target is None:
                continue
            graph[name].add(target)
            if not top:
                wrong.append(f"{name} imports {target} inside a function")
            wrong += [f"{name} imports the private {n} of {module}" for n in names if n.startswith("_")]
    assert not wrong, wrong

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(dep == goal or (dep not in seen and reaches(dep, goal, seen | {dep})) for dep in graph[start])

    cycles = [name for name in graph if reaches(name, name, {name})]
    assert not cycles, f"server modules on an import circle: {cycles}"


def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def module_graph() -> dict[str, set[str]]:
    """``{module: {project modules it imports}}`` over every file of the project's packages, at file level
    (``from pkg import name`` counts ``pkg.name`` where that is a module, else ``pkg``)."""
    files = {_module_of(f): f for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps: set[str] = set()
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    if full in files:
                        deps.add(full)
                    elif base in files:
                        deps.add(base)
        graph[mod] = deps - {mod}
    return graph


def test_no_import_circle_between_files() -> None:
    """No module reaches itself through imports, lazy (inside functions) or not."""
    graph = module_graph()
    circles, state = [], {}

    def visit(mod: str, stack: list[str]) -> None:
        state[mod] = "open"
        for dep in sorted(graph.get(mod, ())):
            if state.get(dep) == "open":
                circles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[mod] = "done"

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)
