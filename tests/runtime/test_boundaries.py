"""The bus is the only coupling between services: no service imports another's modules.
What services share lives in `contracts` (messages, endpoints, pure rules) or in
`services.runtime` (mechanisms). The CLI and the platform assemble services and may import
them all. The gateway is a service like the others."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

SERVICES = ROOT / "services"
SHARED = {"runtime"}  # importable by every service
ASSEMBLERS = {"cli.py", "platform.py", "specs.py"}  # may import every service


def _imports(path: Path, root: Path = SERVICES) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, relative ones resolved."""
    package = ("services", *path.relative_to(root).parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + (base,)).rstrip(".")
            found.append((node.lineno, base))
            # `from services import ledger` names a service too
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _service_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "services" else None


def violations(root: Path = SERVICES) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] in ASSEMBLERS or relative.parts[0] in SHARED:
            continue
        if len(relative.parts) == 1:  # services/__init__.py
            continue
        owner = relative.parts[0]
        for line, module in _imports(path, root):
            other = _service_of(module)
            if other is not None and other not in (owner, *SHARED) and (
                    (root / other).is_dir() or (root / f"{other}.py").exists()):
                found.append(f"services/{relative}:{line} imports {module}")
    return sorted(set(found))


def test_no_service_imports_another():
    assert violations() == []


def test_runtime_imports_no_service():
    """The shared runtime depends on contracts only, never on a service."""
    found = []
    for path in sorted((SERVICES / "runtime").rglob("*.py")):
        for line, module in _imports(path, SERVICES):
            other = _service_of(module)
            if other is not None and other != "runtime":
                found.append(f"{path.relative_to(SERVICES.parent)}:{line} imports {module}")
    assert found == []


def test_contracts_import_no_service():
    """Contracts are what services share: they depend on nothing of theirs."""
    contracts = SERVICES.parent / "contracts"
    found = [f"{path.name}:{line} imports {module}"
             for path in sorted(contracts.rglob("*.py"))
             for line, module in _imports(path, contracts) if module.split(".")[0] == "services"]
    assert found == []


def test_the_check_sees_a_violation(tmp_path):
    """The check itself: a gateway module importing metering's domain is reported, in each
    form an import can take."""
    for name in ("gateway", "metering", "runtime"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / "gateway" / "ingest.py").write_text(
        "import services.metering.domain\n"
        "from services.metering import domain\n"
        "from services import metering\n"
        "from services.runtime import db\n"
        "from contracts import meter_events\n"
        "from ..metering import store\n")
    assert violations(tmp_path) == [
        "services/gateway/ingest.py:1 imports services.metering.domain",
        "services/gateway/ingest.py:2 imports services.metering",
        "services/gateway/ingest.py:2 imports services.metering.domain",
        "services/gateway/ingest.py:3 imports services.metering",
        "services/gateway/ingest.py:6 imports services.metering",
        "services/gateway/ingest.py:6 imports services.metering.store",
    ]
