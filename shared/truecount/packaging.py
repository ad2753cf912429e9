"""Build each function's deployable source: ``build/<fn>/`` and ``build/<fn>.zip``.

One command, run from the repository root before ``terraform apply``::

    python scripts/build_functions.py [--config config/example.toml] [--out build]

``build/<fn>/`` holds exactly what Cloud Functions needs, and Terraform zips that
directory (``archive_file``)::

    main.py              functions/<fn>/main.py
    requirements.txt     functions/<fn>/requirements.txt (every line pinned ==)
    truecount.toml       the --config file, validated (TRUECOUNT_CONFIG)
    truecount/...        the .py modules of shared/truecount this function imports

Which modules a function gets: the static import closure of its ``main.py``
(every ``import``/``from`` anywhere in a file, lazy imports inside functions
included, followed transitively), plus the sub-packages in ``KEEP_WHOLE``.
Dynamic imports (``importlib``) cannot be followed, which is why fanout keeps
``truecount.destinations`` whole. The CLI, the local stack and test fakes are
never imported by a function, so they never ship; an import of a ``truecount``
module that does not exist fails the build instead of the cold start.

Determinism: every file gets a fixed mtime and mode and the zip lists entries
sorted with fixed timestamps, so the content hash (the GCS object name in
Terraform) changes only when the content does.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from truecount.config import parse_config
from truecount.errors import ConfigError

FUNCTIONS: tuple[str, ...] = ("ingest", "webhook", "fanout")
PACKAGE = "truecount"
CONFIG_NAME = "truecount.toml"
TOP_LEVEL_FILES = ("main.py", "requirements.txt", CONFIG_NAME)

# 1980-01-01T00:00:00Z: the earliest date a zip entry can hold.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
FIXED_MTIME = 315532800
FILE_MODE = 0o644
DIR_MODE = 0o755

# Sub-packages shipped whole although nothing imports them by name:
# truecount.destinations.registry loads destination modules with importlib.
KEEP_WHOLE: dict[str, tuple[str, ...]] = {
    "ingest": (),
    "webhook": (),
    "fanout": ("truecount.destinations",),
}

_PINNED = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[A-Za-z0-9.!+_-]+"
    r"(\s*;.*)?$"
)
_TEST_DIRS = frozenset({"tests", "test", "__pycache__"})


class BuildError(Exception):
    """The function cannot be built (missing file, bad config, unpinned pin...)."""


@dataclass(frozen=True)
class BuiltFunction:
    """What :func:`build_function` produced.

    Attributes:
        name: the function (``ingest``, ``webhook``, ``fanout``).
        directory: ``<out>/<name>``, the directory Terraform zips.
        zip_path: ``<out>/<name>.zip``, the same files as a deterministic zip.
        files: the zip's entries (POSIX paths, sorted).
        sha256: hex digest of the zip.
    """

    name: str
    directory: Path
    zip_path: Path
    files: tuple[str, ...]
    sha256: str


def is_test_path(relative: Path) -> bool:
    """Tell whether a path inside the package is test code (never deployed).

    Args:
        relative: the path relative to the package directory.

    Returns:
        True for ``tests/`` or ``__pycache__/`` parts, ``test_*.py``,
        ``*_test.py`` and ``conftest.py``.
    """
    if any(part in _TEST_DIRS for part in relative.parts[:-1]):
        return True
    name = relative.name
    return (
        name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"
    )


def discover_modules(package_dir: Path) -> dict[str, Path]:
    """List the runtime ``.py`` modules of a package.

    Args:
        package_dir: the package directory (``shared/truecount``).

    Returns:
        Dotted module name => file, e.g. ``truecount.core.dedup`` =>
        ``core/dedup.py`` and ``truecount.core`` => ``core/__init__.py``.
    """
    root = package_dir.name
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        if is_test_path(relative):
            continue
        parts = [root, *relative.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _parents(name: str) -> Iterator[str]:
    parts = name.split(".")
    for i in range(1, len(parts)):
        yield ".".join(parts[:i])


def imported_modules(
    source: str, module: str | None, is_package: bool = False
) -> tuple[set[str], set[str]]:
    """Collect the dotted names a Python file imports, wherever in the file.

    Args:
        source: the file's text.
        module: its dotted module name (None for a top-level ``main.py``, whose
            relative imports are ignored).
        is_package: True when the file is a package ``__init__.py``.

    Returns:
        ``(required, optional)``: ``required`` holds every ``import a.b`` target
        and every ``from a.b import c`` base ``a.b``, which must exist;
        ``optional`` holds the ``a.b.c`` candidates, which are submodules only
        when such a file exists (otherwise ``c`` is a name in ``a.b``).
        Relative imports are resolved.
    """
    required: set[str] = set()
    optional: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            required.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    continue
                package = module.split(".")
                if not is_package:
                    package.pop()
                cut = len(package) - (node.level - 1)
                if cut <= 0:
                    continue
                base = ".".join(
                    [*package[:cut], *([node.module] if node.module else [])]
                )
            else:
                base = node.module or ""
            if base:
                required.add(base)
            optional.update(f"{base}.{alias.name}" for alias in node.names)
    return required, optional


def select_modules(
    package_dir: Path, entry_files: Sequence[Path], keep: Sequence[str] = ()
) -> list[str]:
    """Choose the package modules one function ships.

    Args:
        package_dir: the package directory.
        entry_files: files outside the package that import it (``main.py``).
        keep: dotted prefixes shipped whole (for modules loaded dynamically).

    Returns:
        Sorted paths relative to the package's parent (``truecount/...py``): the
        import closure of ``entry_files`` and ``keep``, with every parent
        package's ``__init__.py``.

    Raises:
        BuildError: a shipped file imports a ``truecount`` module that does not
            exist.
    """
    root = package_dir.name
    modules = discover_modules(package_dir)
    selected: set[str] = set()
    pending: list[tuple[str | None, Path]] = [(None, f) for f in entry_files]

    def add(name: str) -> None:
        for candidate in (*_parents(name), name):
            if candidate in modules and candidate not in selected:
                selected.add(candidate)
                pending.append((candidate, modules[candidate]))

    for name in modules:
        if _is_under(name, keep):
            add(name)
    missing: set[str] = set()
    while pending:
        module, path = pending.pop()
        is_package = path.name == "__init__.py"
        required, optional = imported_modules(
            path.read_text("utf-8"), module, is_package
        )
        for target in required | optional:
            if target in modules:
                add(target)
            elif target in required and _is_under(target, [root]):
                missing.add(f"{target} (imported by {path.name})")
    if missing:
        names = ", ".join(sorted(missing))
        raise BuildError(f"imports of modules that do not exist: {names}")
    return sorted(
        modules[name].relative_to(package_dir.parent).as_posix() for name in selected
    )


def read_requirements(path: Path) -> list[str]:
    """Read a requirements file and insist that every requirement is pinned.

    Args:
        path: ``functions/<fn>/requirements.txt``.

    Returns:
        The requirement lines (comments and blanks dropped).

    Raises:
        BuildError: the file is missing or a line is not ``name==version``.
    """
    if not path.is_file():
        raise BuildError(f"{path}: missing")
    lines = []
    for number, raw in enumerate(path.read_text("utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not _PINNED.match(line):
            raise BuildError(f"{path}:{number}: not pinned with ==: {line!r}")
        lines.append(line)
    return lines


def _normalise(directory: Path) -> None:
    """Give every file and directory a fixed mtime and mode."""
    for path in sorted(directory.rglob("*"), reverse=True):
        path.chmod(DIR_MODE if path.is_dir() else FILE_MODE)
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    directory.chmod(DIR_MODE)
    os.utime(directory, (FIXED_MTIME, FIXED_MTIME))


def write_zip(directory: Path, zip_path: Path) -> tuple[str, ...]:
    """Zip a directory deterministically (sorted entries, fixed dates and modes).

    Args:
        directory: the directory to zip (its contents become the zip root).
        zip_path: the zip to write.

    Returns:
        The entry names, sorted.
    """
    names = sorted(
        p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()
    )
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = (0o100000 | FILE_MODE) << 16
            archive.writestr(info, (directory / name).read_bytes(), compresslevel=9)
    return tuple(names)


def _clean(target: Path) -> None:
    """Remove a previous build, refusing to delete anything that is not one."""
    if not target.exists():
        return
    unexpected = {p.name for p in target.iterdir()} - {*TOP_LEVEL_FILES, PACKAGE}
    if not target.is_dir() or unexpected:
        raise BuildError(
            f"{target} is not a previous build (holds {sorted(unexpected)}); "
            "choose another --out"
        )
    shutil.rmtree(target)


def build_function(
    name: str,
    *,
    functions_dir: Path,
    package_dir: Path,
    config: Path,
    out_dir: Path,
) -> BuiltFunction:
    """Build ``<out_dir>/<name>/`` and ``<out_dir>/<name>.zip``.

    Args:
        name: one of :data:`FUNCTIONS`.
        functions_dir: the ``functions/`` directory (``<name>/main.py`` and
            ``<name>/requirements.txt``).
        package_dir: the ``truecount`` package directory.
        config: the TOML config to ship as ``truecount.toml``.
        out_dir: where to write (usually ``build``).

    Returns:
        The directory, the zip, its entries and its SHA-256.

    Raises:
        BuildError: a missing or unpinned input, an invalid config, an import of
            a module that does not exist, or an ``out_dir`` that would overwrite
            something else.
    """
    if name not in FUNCTIONS:
        raise BuildError(f"unknown function {name!r}; expected one of {FUNCTIONS}")
    source = functions_dir / name
    main_py = source / "main.py"
    if not main_py.is_file():
        raise BuildError(f"{main_py}: missing")
    read_requirements(source / "requirements.txt")
    try:
        text = config.read_text("utf-8")
    except OSError as exc:
        raise BuildError(f"{config}: cannot read config: {exc.strerror}") from None
    try:
        parse_config(text, str(config))
    except ConfigError as exc:
        raise BuildError(str(exc)) from None
    for forbidden in (functions_dir, package_dir):
        if out_dir.resolve().is_relative_to(forbidden.resolve()):
            raise BuildError(f"--out {out_dir} is inside the sources ({forbidden})")
    try:
        modules = select_modules(package_dir, [main_py], KEEP_WHOLE[name])
    except BuildError as exc:
        raise BuildError(f"{name}: {exc}") from None

    target = out_dir / name
    _clean(target)
    target.mkdir(parents=True)
    shutil.copyfile(main_py, target / "main.py")
    shutil.copyfile(source / "requirements.txt", target / "requirements.txt")
    (target / CONFIG_NAME).write_bytes(config.read_bytes())
    for relative in modules:
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package_dir.parent / relative, destination)
    _normalise(target)

    zip_path = out_dir / f"{name}.zip"
    files = write_zip(target, zip_path)
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    return BuiltFunction(name, target, zip_path, files, digest)


def main(argv: Sequence[str] | None = None, root: Path | None = None) -> int:
    """Command line: build the functions, print one line per zip.

    Args:
        argv: arguments (default ``sys.argv[1:]``).
        root: repository root holding ``functions/`` and ``shared/truecount``
            (default: the current directory).

    Returns:
        The exit status: 0 on success, 1 on a build error.
    """
    root = root or Path.cwd()
    parser = argparse.ArgumentParser(
        prog="build_functions", description="Build build/<fn>/ and build/<fn>.zip."
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=root / "config" / "example.toml",
        help="TOML config shipped as truecount.toml (default: config/example.toml)",
    )
    parser.add_argument(
        "--out", type=Path, default=root / "build", help="output (default: build)"
    )
    parser.add_argument(
        "--function",
        action="append",
        choices=FUNCTIONS,
        dest="functions",
        help="build only this function (repeatable; default: all three)",
    )
    args = parser.parse_args(argv)
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for name in args.functions or FUNCTIONS:
            built = build_function(
                name,
                functions_dir=root / "functions",
                package_dir=root / "shared" / PACKAGE,
                config=args.config,
                out_dir=out_dir,
            )
            print(f"{built.zip_path}  {len(built.files)} files  sha256={built.sha256}")
    except BuildError as exc:
        print(f"build_functions: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
