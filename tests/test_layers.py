"""Who may import whom in src/pfs: each module imports only from its own layer or below.

    shared (errors, paths, failpoints, metrics) < storage < repository < jobs, sync, config
        < http < client, sync's client-side driver < cli

`pfs.client` is narrower still: shared modules and sync's wire format only, so a program
that only talks to a server loads none of the server. Layers are named by package or module
prefix (the longest one wins), so `pfs.sync` and `pfs.jobs.runtime` may be modules or
packages. Every `import` and `from` counts: relative ones resolved, those inside functions
(a lazy import is still a dependency) and those under `TYPE_CHECKING` (a layer that names a
higher layer's types cannot be read or reused without it, and such a guard is the usual way
to hide an import cycle, which is what this test is here to show).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = "pfs"

SHARED = ("pfs.errors", "pfs.paths", "pfs.failpoints")
# Lowest first. "pfs" and "pfs.sync" themselves are facades: `pfs.Client` is the client, and
# `pfs.sync.clone/pull/push` are the driver's (loaded lazily: importing pfs.sync.receiver,
# as the server does, runs the package's __init__ but never loads the driver or the client).
FACADES = (ROOT, "pfs.sync")
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("shared", (*SHARED, "pfs.metrics")),  # metrics: counters any layer adds to; never the client's
    ("storage", ("pfs.storage",)),
    ("repository, access", ("pfs.repository", "pfs.access")),
    ("jobs, sync, config", ("pfs.jobs", "pfs.sync", "pfs.config")),
    ("http", ("pfs.http",)),
    ("client, sync driver, fsspec", ("pfs.client", "pfs.records", "pfs.sync.driver", "pfs.fs", *FACADES)),
    ("cli", ("pfs.cli", "pfs.__main__")),
]
# Modules that may import less than their layer allows: only these prefixes (and themselves).
ONLY: dict[str, tuple[str, ...]] = {
    "pfs.client": (*SHARED, "pfs.sync.wire", "pfs.records"),
    "pfs.records": (),  # plain data: what the client returns
    "pfs.fs": (*SHARED, "pfs.client", "pfs.records"),  # the file system is the client's, nothing more
}


def _under(module: str, prefix: str, facade: bool = False) -> bool:
    if facade:  # the package's own __init__, not everything in it
        return module == prefix
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int | None:
    """The index in LAYERS of the longest prefix that names `module`."""
    matches = [
        (len(p) + (p in FACADES and module == p), i)  # a facade beats its package's own prefix
        for i, (_, prefixes) in enumerate(LAYERS)
        for p in prefixes
        if _under(module, p, facade=p in FACADES and i == len(LAYERS) - 2)
    ]
    return max(matches)[1] if matches else None


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, root: Path) -> bool:
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import of a pfs module in a file, wherever it is written."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - (node.level - 1)])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            # `from pkg import x` imports the module pkg.x when there is one, else a name of pkg
            targets = [f"{source}.{a.name}" if is_module(f"{source}.{a.name}", root) else source for a in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):  # `from .x import a, b`: x once
            if _under(target, ROOT) or target.startswith(ROOT + "."):
                yield node.lineno, target


def sources(root: Path) -> list[Path]:
    return sorted((root / ROOT).rglob("*.py"))


def violations(root: Path) -> list[str]:
    """Every import against the rule, as `file:line: what and why`, in file order."""
    out: list[str] = []
    for path in sources(root):
        importer = module_name(path, root)
        own = layer_of(importer)
        if own is None:
            out.append(f"{path.relative_to(root)}: {importer} is in no layer: add it to LAYERS in tests/test_layers.py")
            continue
        only = next((allowed for m, allowed in ONLY.items() if _under(importer, m)), None)
        for line, target in imports(path, root):
            theirs = layer_of(target)
            where = f"{path.relative_to(root)}:{line}: {importer} ({LAYERS[own][0]}) imports {target}"
            if theirs is None:
                out.append(f"{where}, which is in no layer")
            elif only is not None and not _under(target, importer) and not any(_under(target, p) for p in only):
                out.append(f"{where}: {importer} may import only {', '.join(only)}")
            elif theirs > own:
                out.append(f"{where} ({LAYERS[theirs][0]}), a higher layer")
    return out


def test_every_module_has_a_layer() -> None:
    missing = [module_name(p, SRC) for p in sources(SRC) if layer_of(module_name(p, SRC)) is None]
    assert not missing, f"modules in no layer (add them to LAYERS): {missing}"


def test_imports_point_down_the_layers() -> None:
    found = violations(SRC)
    order = " < ".join(name for name, _ in LAYERS)
    assert not found, f"imports against the layer rule ({order}):\n" + "\n".join(found)


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    """A planted bad import of each kind is reported with its file and line; good ones are not."""
    files = {
        "pfs/__init__.py": "from . import errors\n",
        "pfs/errors.py": "",
        "pfs/paths.py": "from .errors import PfsError\n",
        "pfs/storage/__init__.py": "",
        "pfs/storage/objects.py": "import os\n\n\ndef f():\n    from ..http import api\n",  # lazy, relative
        "pfs/repository/__init__.py": "",
        "pfs/repository/repo.py": (
            "from typing import TYPE_CHECKING\nfrom pfs.storage import objects\n"
            "if TYPE_CHECKING:\n    from pfs.cli import main\n"  # types only
        ),
        "pfs/sync/__init__.py": "",
        "pfs/sync/receiver.py": "from .driver import transfer\n",  # the server side reaching the driver
        "pfs/sync/wire.py": "",
        "pfs/sync/driver.py": "from pfs.client import Client\nfrom . import wire\n",
        "pfs/http/__init__.py": "",
        "pfs/http/api.py": "from ..repository.repo import Repository\nfrom .. import Client\n",  # the facade
        "pfs/client.py": "from . import errors\nfrom .sync import wire\nimport pfs.repository.repo\n",
        "pfs/cli.py": "from .client import Client\nfrom .http import api\n",
        "pfs/newthing.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert violations(tmp_path) == [
        "pfs/client.py:3: pfs.client (client, sync driver, fsspec) imports pfs.repository.repo: "
        "pfs.client may import only pfs.errors, pfs.paths, pfs.failpoints, pfs.sync.wire, pfs.records",
        "pfs/http/api.py:2: pfs.http.api (http) imports pfs (client, sync driver, fsspec), a higher layer",
        "pfs/newthing.py: pfs.newthing is in no layer: add it to LAYERS in tests/test_layers.py",
        "pfs/repository/repo.py:4: pfs.repository.repo (repository, access) imports pfs.cli (cli), a higher layer",
        "pfs/storage/objects.py:5: pfs.storage.objects (storage) imports pfs.http.api (http), a higher layer",
        "pfs/sync/receiver.py:1: pfs.sync.receiver (jobs, sync, config) imports pfs.sync.driver "
        "(client, sync driver, fsspec), a higher layer",
    ]
