"""The import contract: imports go downward only (docs/architecture.md, "Layers").

The contracts live in pyproject.toml under [tool.importlinter]; this test runs import-linter on
them so the direction cannot drift. A failure prints import-linter's report: every import that
breaks a contract, with its module and line.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

from agent.settings import PROJECT_ROOT

pytestmark = pytest.mark.unit

PYPROJECT = PROJECT_ROOT / "pyproject.toml"

# In a fresh interpreter: import-linter configures logging globally, and the graph it builds
# must see the files on disk, not modules this test session has already imported.
_LINT = (
    "import sys; from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))"
)


def _contracts() -> list[dict]:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]


def test_the_contract_covers_every_layer_rule() -> None:
    """Guards against a contract quietly dropped or loosened in pyproject.toml."""
    by_type: dict[str, list[dict]] = {}
    for contract in _contracts():
        by_type.setdefault(contract["type"], []).append(contract)
        assert "ignore_imports" not in contract, f"{contract['name']}: fix the import instead of ignoring it"
    assert [c["layers"] for c in by_type["layers"]] == [["agent", "graphs", "tools"]]
    forbidden = {(frozenset(c["source_modules"]), frozenset(c["forbidden_modules"])) for c in by_type["forbidden"]}
    assert forbidden == {
        (frozenset({"graphs", "tools"}), frozenset({"app"})),
        (frozenset({"tools"}), frozenset({"langchain", "langchain_core", "langchain_openai", "langgraph", "gradio", "fastapi", "uvicorn"})),
        (frozenset({"graphs"}), frozenset({"gradio"})),
        (frozenset({"graphs", "tools"}), frozenset({"celery", "kombu", "redis"})),
    }
    assert [c["ancestors"] for c in by_type["acyclic_siblings"]] == [["tools"]]


def _cycle_details(report: str) -> str:
    """The imports behind each cycle import-linter names, both ways round, with file and line.

    import-linter's acyclic report names only the two sibling packages (".imaging -> .results");
    a reader needs the modules and lines that close the loop.
    """
    import grimp

    graph: grimp.ImportGraph | None = None
    lines: list[str] = []
    parent = ""
    for line in report.splitlines():
        if found := re.match(r"No cycles are allowed in ([\w.]+)\.", line):
            parent = found.group(1)
        elif parent and (found := re.match(r"- \.([\w.]+) -> \.([\w.]+) \(", line)):
            graph = graph or grimp.build_graph(parent.split(".")[0], cache_dir=None)
            a, b = f"{parent}.{found.group(1)}", f"{parent}.{found.group(2)}"
            lines.append(f"cycle between {a} and {b}:")
            for importer_root, imported_root in ((a, b), (b, a)):
                for importer in sorted({importer_root, *graph.find_descendants(importer_root)}):
                    for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                        if imported == imported_root or imported.startswith(imported_root + "."):
                            for detail in graph.get_import_details(importer=importer, imported=imported):
                                lines.append(
                                    f"  {importer} -> {imported} (l.{detail['line_number']}: "
                                    f"{detail['line_contents']})"
                                )
    return "\n".join(lines)


def test_imports_go_downward_only() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LINT, str(PYPROJECT)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = result.stdout + result.stderr
    analysed = re.search(r"Analyzed (\d+) files", report)
    if not analysed or int(analysed.group(1)) < 50:
        pytest.fail(f"import-linter did not analyse the project:\n{report}", pytrace=False)
    if result.returncode != 0 or f"Contracts: {len(_contracts())} kept, 0 broken." not in report:
        pytest.fail(
            "An import breaks the layer contract (docs/architecture.md, 'Layers'). Move the code to "
            "the layer it belongs to, or pass the dependency in from above.\n"
            f"import-linter's report:\n{report}\n{_cycle_details(report)}",
            pytrace=False,
        )
