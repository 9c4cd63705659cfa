"""The import graph of agent/ and controller/: no module imports itself through others (every
import counts, at the top, under TYPE_CHECKING or in a function), and only the adapters in
agent/hypervisor/ reach libvirt, Ceph or outside programs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "controller")
OUTSIDE = frozenset({"libvirt", "libvirt_qemu", "rbd", "rados", "subprocess"})
ADAPTERS = "agent.hypervisor"
# Modules outside agent/hypervisor/ that may import one of OUTSIDE anyway, and why. Empty:
# doctor's time probes run through agent/hypervisor/time_sync.py.
ALLOWED: dict[str, frozenset[str]] = {}

Graph = dict[str, set[str]]


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imported(module: str, path: Path) -> list[tuple[str, str | None]]:
    """What `module` imports anywhere in its text, absolute: ("a.b", None) for `import a.b`,
    ("a.b", "c") for `from a.b import c`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names += [(base, alias.name) for alias in node.names]
    return names


def graph(found: dict[str, Path]) -> Graph:
    """module -> the modules of `found` it imports: `from a import b` depends on the module
    a.b when there is one, else on a."""
    edges: Graph = {}
    for module, path in found.items():
        targets = set()
        for base, name in imported(module, path):
            target = f"{base}.{name}" if f"{base}.{name}" in found else base
            while target and target not in found:
                target = target.rpartition(".")[0]
            if target and target != module:
                targets.add(target)
        edges[module] = targets
    return edges


def cycles(edges: Graph) -> list[list[str]]:
    """One cycle (as a path back to its start) for each module found on a cycle first."""
    found: list[list[str]] = []
    done: set[str] = set()
    for start in sorted(edges):
        stack = [(start, iter(sorted(edges[start])))]
        path, on_path = [start], {start}
        while stack:
            module, following = stack[-1]
            target = next(following, None)
            if target is None:
                stack.pop()
                path.pop()
                on_path.discard(module)
                done.add(module)
            elif target in on_path:
                found.append([*path[path.index(target) :], target])
            elif target not in done:
                stack.append((target, iter(sorted(edges[target]))))
                path.append(target)
                on_path.add(target)
    return found


def outside_imports(found: dict[str, Path]) -> list[str]:
    """ "module: name" for each import of OUTSIDE by a module that is no adapter."""
    offenders = []
    for module, path in found.items():
        if module == ADAPTERS or module.startswith(f"{ADAPTERS}."):
            continue
        for base, _ in imported(module, path):
            top = base.partition(".")[0]
            if top in OUTSIDE and top not in ALLOWED.get(module, frozenset()):
                offenders.append(f"{module}: {top}")
    return sorted(set(offenders))


def test_no_module_of_agent_or_controller_imports_itself_through_others() -> None:
    assert cycles(graph(modules(ROOT))) == []


def test_only_the_adapters_import_libvirt_ceph_or_subprocess() -> None:
    assert outside_imports(modules(ROOT)) == []


def test_the_allowed_exceptions_are_still_needed() -> None:
    found = modules(ROOT)
    for module, names in ALLOWED.items():
        used = {base.partition(".")[0] for base, _ in imported(module, found[module])}
        assert names <= used, f"{module} no longer imports {sorted(names - used)}"


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cycle_through_a_late_or_type_checking_import_is_found(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "agent/__init__.py": "",
            "agent/a.py": "from agent import b\n",
            "agent/b.py": "def late():\n    from agent.c import x\n",
            "agent/c.py": "import typing\nif typing.TYPE_CHECKING:\n    from . import a\n",
            "agent/d.py": "import agent.a\n",
        },
    )
    assert cycles(graph(modules(tmp_path, ("agent",)))) == [
        ["agent.a", "agent.b", "agent.c", "agent.a"]
    ]


def test_a_package_importing_its_submodules_is_no_cycle(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "agent/__init__.py": "",
            "agent/store/__init__.py": "from agent.store.db import Db\n",
            "agent/store/db.py": "from agent.store import schema\n",
            "agent/store/schema.py": "",
        },
    )
    assert cycles(graph(modules(tmp_path, ("agent",)))) == []


def test_an_operation_running_a_program_is_an_offender_an_adapter_is_not(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "agent/__init__.py": "",
            "agent/hypervisor/__init__.py": "",
            "agent/hypervisor/tool.py": "import subprocess\n",
            "agent/operations/__init__.py": "",
            "agent/operations/probe.py": "def run():\n    import subprocess\n",
            "agent/operations/host.py": "from libvirt import virDomain\n",
        },
    )
    assert outside_imports(modules(tmp_path, ("agent",))) == [
        "agent.operations.host: libvirt",
        "agent.operations.probe: subprocess",
    ]
