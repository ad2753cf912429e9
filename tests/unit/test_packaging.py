"""Function packaging (truecount.packaging, scripts/build_functions.py).

The zips are built into a temporary directory from the real package and the real
requirements. Each function's real ``main.py`` is used when it exists; until its
engineer has written it, a small stand-in that imports the package is used, so
these tests check the packaging, not the function.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path, PurePosixPath

import pytest

from truecount import packaging
from truecount.config import parse_config
from truecount.errors import ConfigError
from truecount.packaging import (
    FUNCTIONS,
    BuildError,
    BuiltFunction,
    build_function,
    imported_modules,
    read_requirements,
    select_modules,
    write_zip,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "shared" / "truecount"
REAL_FUNCTIONS = ROOT / "functions"
EXAMPLE_CONFIG = ROOT / "config" / "example.toml"
TOP_LEVEL = {"main.py", "requirements.txt", "truecount.toml"}

TINY_CONFIG = """\
[destinations.sink]
type = "http"
endpoint = "http://127.0.0.1:9/collect"
events = ["purchase"]
"""

STAND_IN_MAIN = """\
import functions_framework
from truecount.config import load_config


@functions_framework.http
def {name}(request):
    load_config(None)
    return "ok"
"""


def _config_path(tmp: Path) -> Path:
    """config/example.toml when it exists and is valid, else a tiny config."""
    if EXAMPLE_CONFIG.is_file():
        try:
            parse_config(EXAMPLE_CONFIG.read_text("utf-8"), str(EXAMPLE_CONFIG))
        except ConfigError:
            pass
        else:
            return EXAMPLE_CONFIG
    path = tmp / "tiny.toml"
    path.write_text(TINY_CONFIG, encoding="utf-8")
    return path


def _functions_dir(tmp: Path) -> Path:
    """A functions/ tree with the real requirements and main.py (or stand-ins)."""
    target = tmp / "functions"
    for name in FUNCTIONS:
        (target / name).mkdir(parents=True)
        shutil.copyfile(
            REAL_FUNCTIONS / name / "requirements.txt",
            target / name / "requirements.txt",
        )
        real_main = REAL_FUNCTIONS / name / "main.py"
        if real_main.is_file():
            shutil.copyfile(real_main, target / name / "main.py")
        else:
            (target / name / "main.py").write_text(
                STAND_IN_MAIN.format(name=name), encoding="utf-8"
            )
    return target


def _build_all(tmp: Path, out: Path) -> dict[str, BuiltFunction]:
    functions_dir = tmp / "functions"
    if not functions_dir.exists():
        _functions_dir(tmp)
    config = _config_path(tmp)
    return {
        name: build_function(
            name,
            functions_dir=functions_dir,
            package_dir=PACKAGE_DIR,
            config=config,
            out_dir=out,
        )
        for name in FUNCTIONS
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary directory holding the functions/ tree and the config."""
    tmp = tmp_path_factory.mktemp("packaging")
    _functions_dir(tmp)
    return tmp


@pytest.fixture(scope="module")
def built(workspace: Path) -> dict[str, BuiltFunction]:
    """The three functions built once into <tmp>/build."""
    return _build_all(workspace, workspace / "build")


def _zip_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def test_each_zip_holds_main_requirements_config_and_package_modules(
    built: dict[str, BuiltFunction],
) -> None:
    """Exactly main.py, requirements.txt, truecount.toml and truecount/**/*.py:
    no tests, no __pycache__, no other file types; zip == build directory."""
    for name, result in built.items():
        names = _zip_names(result.zip_path)
        assert set(names) >= TOP_LEVEL, name
        package = [n for n in names if n not in TOP_LEVEL]
        assert package, name
        assert all(n.startswith("truecount/") and n.endswith(".py") for n in package)
        assert "truecount/__init__.py" in package
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        assert not [
            n
            for n in names
            if "/tests/" in n
            or PurePosixPath(n).name.startswith("test_")
            or PurePosixPath(n).name == "conftest.py"
        ]
        on_disk = sorted(
            p.relative_to(result.directory).as_posix()
            for p in result.directory.rglob("*")
            if p.is_file()
        )
        assert names == on_disk == list(result.files)


def test_zip_files_are_copies_of_their_sources(
    built: dict[str, BuiltFunction], workspace: Path
) -> None:
    """main.py, requirements and the config are the inputs byte for byte, and the
    shipped modules are the package's own files."""
    config = _config_path(workspace)
    for name, result in built.items():
        with zipfile.ZipFile(result.zip_path) as archive:
            assert archive.read("truecount.toml") == config.read_bytes()
            assert (
                archive.read("main.py")
                == (workspace / "functions" / name / "main.py").read_bytes()
            )
            assert (
                archive.read("requirements.txt")
                == (REAL_FUNCTIONS / name / "requirements.txt").read_bytes()
            )
            for entry in result.files:
                if entry.startswith("truecount/"):
                    assert (
                        archive.read(entry) == (PACKAGE_DIR.parent / entry).read_bytes()
                    )


def test_tooling_modules_never_ship(built: dict[str, BuiltFunction]) -> None:
    """The CLI, the local stack, test fakes and the builder stay out of every zip."""
    tooling = {
        "truecount/cli.py",
        "truecount/devstack.py",
        "truecount/testing.py",
        "truecount/packaging.py",
        "truecount/contract.py",
    }
    for result in built.values():
        assert not tooling & set(result.files)


def test_edge_zips_carry_no_destinations_and_fanout_carries_all_of_them(
    built: dict[str, BuiltFunction],
) -> None:
    """ingest/webhook never deliver; fanout loads destinations by type name
    (importlib), so it ships every destination module and no intake code."""
    for name in ("ingest", "webhook"):
        assert not [
            f for f in built[name].files if f.startswith("truecount/destinations/")
        ]
    expected = {
        p.relative_to(PACKAGE_DIR.parent).as_posix()
        for p in (PACKAGE_DIR / "destinations").glob("*.py")
    }
    fanout = set(built["fanout"].files)
    assert expected <= fanout
    assert not [
        f
        for f in fanout
        if f.startswith(
            ("truecount/sources/", "truecount/webhooks/", "truecount/apps/")
        )
    ]


def test_zips_are_byte_identical_across_builds(
    built: dict[str, BuiltFunction], workspace: Path
) -> None:
    """A second build gives the same bytes: sorted entries, fixed dates/modes."""
    again = _build_all(workspace, workspace / "build-again")
    for name, result in built.items():
        assert again[name].sha256 == result.sha256
        assert result.zip_path.read_bytes() == again[name].zip_path.read_bytes()
        with zipfile.ZipFile(result.zip_path) as archive:
            infos = archive.infolist()
        assert [i.filename for i in infos] == sorted(i.filename for i in infos)
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.external_attr >> 16 for i in infos} == {0o100644}
        expected = hashlib.sha256(result.zip_path.read_bytes()).hexdigest()
        assert result.sha256 == expected


def test_build_directory_has_fixed_mtimes(built: dict[str, BuiltFunction]) -> None:
    """Terraform zips build/<fn> itself, so its files carry the fixed mtime and
    mode too."""
    for result in built.values():
        for path in result.directory.rglob("*"):
            assert int(path.stat().st_mtime) == packaging.FIXED_MTIME
            if path.is_file():
                assert path.stat().st_mode & 0o777 == 0o644


_IMPORT_CHECK = """
import importlib, importlib.abc, json, os, sys
build = os.getcwd()
sys.path.insert(0, build)
blocked = set(json.loads(sys.argv[2]))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ImportError(f"{name} is not in this function's requirements")
        return None

sys.meta_path.insert(0, Block())
import main
assert callable(getattr(main, sys.argv[1]))
for extra in json.loads(sys.argv[3]):
    importlib.import_module(extra)
files = sorted(
    getattr(m, "__file__", None) or ""
    for n, m in list(sys.modules.items())
    if n == "truecount" or n.startswith("truecount.")
)
print(json.dumps(files))
"""


@pytest.mark.parametrize("name", FUNCTIONS)
def test_built_function_imports_from_its_own_files_only(
    built: dict[str, BuiltFunction], name: str
) -> None:
    """In a fresh interpreter, main.py imports with the build dir first on the
    path, every truecount module comes from the zip's files, and ingest/webhook
    never import the Firestore SDK."""
    result = built[name]
    destinations = sorted(
        f"truecount.destinations.{PurePosixPath(f).stem}"
        for f in result.files
        if f.startswith("truecount/destinations/") and not f.endswith("__init__.py")
    )
    blocked = [] if name == "fanout" else ["google.cloud.firestore"]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRUECOUNT_") and not k.endswith("_EMULATOR_HOST")
    }
    env.update(
        TRUECOUNT_CONFIG=str(result.directory / "truecount.toml"),
        GOOGLE_CLOUD_PROJECT="truecount-test",
        PYTHONDONTWRITEBYTECODE="1",
    )
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            _IMPORT_CHECK,
            name,
            json.dumps(blocked),
            json.dumps(destinations),
        ],
        cwd=result.directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert loaded
    shipped = {str(result.directory / f) for f in result.files}
    assert set(loaded) <= shipped


def _distribution_closure(names: Iterable[str]) -> set[str]:
    """Installed distributions the requirements pull in (extras ignored)."""
    seen: set[str] = set()
    stack = [n.lower().replace("_", "-") for n in names]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if "extra ==" in requirement:
                continue
            match = re.match(r"[A-Za-z0-9._-]+", requirement)
            if match:
                stack.append(match.group(0).lower().replace("_", "-"))
    return seen


def _provided_modules(distributions: Iterable[str]) -> set[str]:
    """Dotted names of the modules and packages those distributions install."""
    provided: set[str] = set()
    for name in distributions:
        try:
            files = metadata.files(name) or []
        except metadata.PackageNotFoundError:
            continue
        for file in files:
            path = PurePosixPath(str(file))
            if path.suffix not in {".py", ".so", ".pyd"} or ".." in path.parts:
                continue
            parts = [*path.parts[:-1], path.name.split(".")[0]]
            if parts[-1] == "__init__":
                parts.pop()
            for i in range(1, len(parts) + 1):
                provided.add(".".join(parts[:i]))
    return provided


@pytest.mark.parametrize("name", FUNCTIONS)
def test_third_party_imports_are_covered_by_the_functions_requirements(
    built: dict[str, BuiltFunction], name: str
) -> None:
    """Every non-stdlib import in the shipped code (lazy ones too) is installed by
    the function's pinned requirements, so the deployed function cannot hit an
    ImportError the tests would miss (e.g. Firestore in webhook)."""
    result = built[name]
    requirements = read_requirements(result.directory / "requirements.txt")
    provided = _provided_modules(
        _distribution_closure(r.split("==")[0] for r in requirements)
    )
    uncovered = set()
    with zipfile.ZipFile(result.zip_path) as archive:
        for entry in result.files:
            if not entry.endswith(".py"):
                continue
            module = (
                None
                if "/" not in entry
                else entry.removesuffix(".py")
                .removesuffix("/__init__")
                .replace("/", ".")
            )
            required, _ = imported_modules(
                archive.read(entry).decode("utf-8"),
                module,
                entry.endswith("__init__.py"),
            )
            for target in required:
                top = target.split(".")[0]
                if top in sys.stdlib_module_names or top in {"truecount", "main"}:
                    continue
                if target not in provided:
                    uncovered.add(f"{target} ({entry})")
    assert sorted(uncovered) == []


@pytest.mark.parametrize("name", FUNCTIONS)
def test_requirements_are_pinned_to_the_tested_versions(name: str) -> None:
    """Every requirement line is name==version, at the version installed in the
    venv the tests run with."""
    lines = read_requirements(REAL_FUNCTIONS / name / "requirements.txt")
    assert lines
    for line in lines:
        package, _, version = line.partition("==")
        assert version, line
        assert metadata.version(package) == version, line


def test_only_fanout_requires_firestore() -> None:
    """ingest/webhook zips carry no Firestore SDK; httpx only where it is used."""
    packages = {
        name: {
            line.split("==")[0].lower()
            for line in read_requirements(REAL_FUNCTIONS / name / "requirements.txt")
        }
        for name in FUNCTIONS
    }
    assert "google-cloud-firestore" not in packages["ingest"]
    assert "google-cloud-firestore" not in packages["webhook"]
    assert "google-cloud-firestore" in packages["fanout"]
    common = {
        "functions-framework",
        "google-cloud-pubsub",
        "pydantic",
        "pydantic-settings",
    }
    assert packages["ingest"] == common
    assert packages["webhook"] == common | {"httpx"}
    assert packages["fanout"] == common | {"httpx", "google-cloud-firestore"}


def test_unpinned_requirement_fails_the_build(tmp_path: Path) -> None:
    """A range instead of == is refused, naming the file and line."""
    functions_dir = _functions_dir(tmp_path)
    (functions_dir / "webhook" / "requirements.txt").write_text(
        "# comment\nhttpx>=0.27\n", encoding="utf-8"
    )
    with pytest.raises(BuildError, match=r"requirements.txt:2: not pinned"):
        build_function(
            "webhook",
            functions_dir=functions_dir,
            package_dir=PACKAGE_DIR,
            config=_config_path(tmp_path),
            out_dir=tmp_path / "build",
        )
    assert not (tmp_path / "build" / "webhook").exists()


def test_invalid_config_fails_the_build_naming_the_key(tmp_path: Path) -> None:
    """The config is validated at build time, with the key in the message."""
    functions_dir = _functions_dir(tmp_path)
    config = tmp_path / "bad.toml"
    config.write_text('[destinations.x]\ntype = "fax"\n', encoding="utf-8")
    with pytest.raises(BuildError, match=r"destinations\.x\.type"):
        build_function(
            "ingest",
            functions_dir=functions_dir,
            package_dir=PACKAGE_DIR,
            config=config,
            out_dir=tmp_path / "build",
        )


def test_import_of_a_missing_truecount_module_fails_the_build(tmp_path: Path) -> None:
    """A main.py importing a module that does not exist fails at build time."""
    functions_dir = _functions_dir(tmp_path)
    (functions_dir / "ingest" / "main.py").write_text(
        "def ingest(request):\n    from truecount.nowhere import thing\n",
        encoding="utf-8",
    )
    with pytest.raises(BuildError, match=r"ingest: .*truecount\.nowhere"):
        build_function(
            "ingest",
            functions_dir=functions_dir,
            package_dir=PACKAGE_DIR,
            config=_config_path(tmp_path),
            out_dir=tmp_path / "build",
        )


def test_missing_main_fails_the_build(tmp_path: Path) -> None:
    """No main.py, no build."""
    functions_dir = _functions_dir(tmp_path)
    (functions_dir / "fanout" / "main.py").unlink()
    with pytest.raises(BuildError, match=r"fanout/main.py: missing"):
        build_function(
            "fanout",
            functions_dir=functions_dir,
            package_dir=PACKAGE_DIR,
            config=_config_path(tmp_path),
            out_dir=tmp_path / "build",
        )


def test_build_refuses_to_delete_a_directory_it_did_not_write(tmp_path: Path) -> None:
    """An --out whose <fn> directory holds foreign files is left untouched."""
    functions_dir = _functions_dir(tmp_path)
    foreign = tmp_path / "out" / "ingest"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(BuildError, match="not a previous build"):
        build_function(
            "ingest",
            functions_dir=functions_dir,
            package_dir=PACKAGE_DIR,
            config=_config_path(tmp_path),
            out_dir=tmp_path / "out",
        )
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_build_refuses_an_output_inside_the_sources(tmp_path: Path) -> None:
    """--out inside functions/ would overwrite main.py: refused."""
    functions_dir = _functions_dir(tmp_path)
    with pytest.raises(BuildError, match="inside the sources"):
        build_function(
            "ingest",
            functions_dir=functions_dir,
            package_dir=PACKAGE_DIR,
            config=_config_path(tmp_path),
            out_dir=functions_dir,
        )
    assert (functions_dir / "ingest" / "main.py").is_file()


def _synthetic_package(tmp_path: Path) -> Path:
    package = tmp_path / "src" / "truecount"
    files = {
        "__init__.py": "",
        "a.py": "def f():\n    from .b import g\n    return g\n",
        "b.py": "from truecount.sub import c\ng = c\n",
        "sub/__init__.py": "from . import c\n",
        "sub/c.py": "import json\n",
        "unused.py": "import truecount.a\n",
        "plugins/__init__.py": "",
        "plugins/one.py": "",
        "tests/test_x.py": "import truecount.a\n",
        "test_top.py": "",
        "conftest.py": "",
        "__pycache__/a.cpython-311.pyc": "",
        "data.json": "{}",
    }
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


def test_select_modules_follows_lazy_relative_and_package_imports(
    tmp_path: Path,
) -> None:
    """The closure follows imports inside functions, relative imports and
    `from pkg import module`; keep= ships a sub-package whole; tests, caches
    and non-.py files never ship."""
    package = _synthetic_package(tmp_path)
    main = tmp_path / "main.py"
    main.write_text("import truecount.a\n", encoding="utf-8")
    selected = select_modules(package, [main], keep=("truecount.plugins",))
    assert selected == [
        "truecount/__init__.py",
        "truecount/a.py",
        "truecount/b.py",
        "truecount/plugins/__init__.py",
        "truecount/plugins/one.py",
        "truecount/sub/__init__.py",
        "truecount/sub/c.py",
    ]


def test_imported_modules_resolves_relative_imports() -> None:
    """Relative imports resolve against the module (or the package for an
    __init__); `from x import y` makes x required and x.y optional."""
    source = (
        "import os.path\n"
        "from . import sibling\n"
        "from ..core import dedup\n"
        "def later():\n"
        "    from truecount.models.event import Event\n"
    )
    required, optional = imported_modules(source, "truecount.sources.ga4")
    assert required == {
        "os.path",
        "truecount.sources",
        "truecount.core",
        "truecount.models.event",
    }
    assert optional == {
        "truecount.sources.sibling",
        "truecount.core.dedup",
        "truecount.models.event.Event",
    }
    required, _ = imported_modules("from .c import x\n", "truecount.sub", True)
    assert required == {"truecount.sub.c"}


def test_write_zip_is_independent_of_file_times(tmp_path: Path) -> None:
    """Same content with different mtimes zips to the same bytes."""
    for index, stamp in enumerate((1_000_000_000, 1_700_000_000)):
        directory = tmp_path / f"d{index}"
        (directory / "pkg").mkdir(parents=True)
        for name in ("b.txt", "pkg/a.py"):
            (directory / name).write_text(name, encoding="utf-8")
            os.utime(directory / name, (stamp, stamp))
        write_zip(directory, tmp_path / f"d{index}.zip")
    assert (tmp_path / "d0.zip").read_bytes() == (tmp_path / "d1.zip").read_bytes()
    assert _zip_names(tmp_path / "d0.zip") == ["b.txt", "pkg/a.py"]


def _cli_root(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _functions_dir(root)
    (root / "shared").mkdir()
    (root / "shared" / "truecount").symlink_to(PACKAGE_DIR, target_is_directory=True)
    (root / "scripts").mkdir()
    shutil.copyfile(
        ROOT / "scripts" / "build_functions.py", root / "scripts" / "build_functions.py"
    )
    return root


def test_build_script_builds_every_function_in_one_command(tmp_path: Path) -> None:
    """`python scripts/build_functions.py --config ... --out ...` writes the
    three zips and prints each one's hash."""
    root = _cli_root(tmp_path)
    config = _config_path(tmp_path)
    run = subprocess.run(
        [
            sys.executable,
            str(root / "scripts" / "build_functions.py"),
            "--config",
            str(config),
            "--out",
            str(root / "build"),
        ],
        cwd=root,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == len(FUNCTIONS)
    for name, line in zip(FUNCTIONS, lines, strict=True):
        zip_path = root / "build" / f"{name}.zip"
        digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
        assert line.startswith(str(zip_path))
        assert line.endswith(f"sha256={digest}")
        assert set(_zip_names(zip_path)) >= TOP_LEVEL


def test_cli_reports_errors_with_exit_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing config prints one error line and returns 1."""
    root = _cli_root(tmp_path)
    status = packaging.main(
        ["--config", str(tmp_path / "absent.toml"), "--function", "ingest"], root=root
    )
    assert status == 1
    assert "cannot read config" in capsys.readouterr().err
