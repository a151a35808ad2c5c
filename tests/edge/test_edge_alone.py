"""A gateway box installs warelink[edge] only: nothing of the edge may need the hub's libraries."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.sites import write_site_config

HUB_ONLY = ["fastapi", "starlette", "uvicorn", "psycopg", "psycopg_pool", "orjson"]

BLOCK = textwrap.dedent(f"""
    import importlib.abc, sys
    class HubOnly(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {HUB_ONLY!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None
    sys.meta_path.insert(0, HubOnly())
""")


def run_without_hub_libraries(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_every_edge_module_imports_without_hub_libraries() -> None:
    result = run_without_hub_libraries("""
        import pkgutil, importlib, warelink.edge, warelink.edge.drivers
        for package in (warelink.edge, warelink.edge.drivers):
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{package.__name__}.{module.name}")
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_edge_commands_work_and_hub_commands_name_the_missing_extra(tmp_path: Path) -> None:
    config = write_site_config(tmp_path, site="site-1", gateway="gw-1")
    status = run_without_hub_libraries(f"""
        import sys
        from warelink.edge.cli import main
        sys.exit(main(["edge", "status", "--config", {str(config)!r}]))
    """)
    assert status.returncode == 0, status.stderr
    assert "gw-1" in status.stdout
    hub = run_without_hub_libraries("""
        import sys
        from warelink.edge.cli import main
        sys.exit(main(["hub", "migrate"]))
    """)
    assert hub.returncode != 0
    assert "needs the hub extra" in hub.stderr
    assert "pip install 'warelink[hub]'" in hub.stderr
