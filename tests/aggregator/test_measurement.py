"""The code measurement: deterministic, and sensitive to exactly the measured files."""

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cotune
from cotune.aggregator.measurement import code_measurement, measured_files

FILES = {
    "__init__.py": b'"""fake package."""\n',
    "a.py": b"VALUE = 1\n",
    "sub/__init__.py": b"",
    "sub/b.py": b"def f():\n    return 2\n",
    "chain/artifacts/x.json": b'{"abi": [], "bytecode": "0x00"}',
}
MEASURED = sorted(FILES)


def _make(root: Path, files: dict[str, bytes] = FILES) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return _make(tmp_path / "pkg")


@pytest.fixture
def baseline(package: Path) -> bytes:
    return code_measurement(package)


@pytest.fixture
def copy(package: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(package, tmp_path / "copy"))


def test_measured_files_are_the_sources_and_artifacts(package: Path) -> None:
    relative = [p.relative_to(package).as_posix() for p in measured_files(package)]
    assert relative == MEASURED


def test_deterministic_and_independent_of_location(package: Path, copy: Path) -> None:
    value = code_measurement(package)
    assert len(value) == 32
    assert code_measurement(package) == value
    assert code_measurement(copy) == value


@pytest.mark.parametrize("name", MEASURED)
def test_changing_one_byte_changes_it(baseline: bytes, copy: Path, name: str) -> None:
    path = copy / name
    data = bytearray(path.read_bytes() or b"\0")
    data[0] ^= 0x01
    path.write_bytes(bytes(data))
    assert code_measurement(copy) != baseline


def test_appending_a_byte_changes_it(baseline: bytes, copy: Path) -> None:
    with (copy / "a.py").open("ab") as handle:
        handle.write(b"\n")
    assert code_measurement(copy) != baseline


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("a.py", "c.py"),
        ("sub/b.py", "sub/c.py"),
        ("sub/b.py", "b.py"),  # same name, another directory
        ("chain/artifacts/x.json", "chain/artifacts/y.json"),
    ],
)
def test_renaming_a_file_changes_it(baseline: bytes, copy: Path, old: str, new: str) -> None:
    (copy / old).rename(copy / new)
    assert code_measurement(copy) != baseline


def test_swapping_contents_changes_it(baseline: bytes, copy: Path) -> None:
    a, b = (copy / "a.py").read_bytes(), (copy / "sub/b.py").read_bytes()
    (copy / "a.py").write_bytes(b)
    (copy / "sub/b.py").write_bytes(a)
    assert code_measurement(copy) != baseline


@pytest.mark.parametrize("name", ["extra.py", "sub/deeper/new.py", "chain/artifacts/new.json"])
def test_adding_a_measured_file_changes_it(baseline: bytes, copy: Path, name: str) -> None:
    _make(copy, {name: b"x = 1\n"})
    assert code_measurement(copy) != baseline


@pytest.mark.parametrize("name", MEASURED)
def test_removing_a_measured_file_changes_it(baseline: bytes, copy: Path, name: str) -> None:
    (copy / name).unlink()
    assert code_measurement(copy) != baseline


@pytest.mark.parametrize(
    "name",
    [
        "__pycache__/x.py",
        "__pycache__/a.cpython-312.pyc",
        "sub/__pycache__/b.py",
        "config.json",
        "sub/data.json",
        "chain/abi.json",
        "chain/artifacts/sub/nested.json",
        "notes.txt",
        "chain/artifacts/x.bin",
        "a.pyc",
    ],
)
def test_adding_an_unmeasured_file_does_not_change_it(
    baseline: bytes, copy: Path, name: str
) -> None:
    _make(copy, {name: b"anything"})
    assert code_measurement(copy) == baseline


def test_empty_directories_do_not_change_it(baseline: bytes, copy: Path) -> None:
    (copy / "empty").mkdir()
    (copy / "artifacts").mkdir()
    assert code_measurement(copy) == baseline


def test_default_measures_the_installed_package() -> None:
    first = code_measurement()
    assert len(first) == 32
    assert code_measurement() == first
    installed = Path(cotune.__file__).resolve().parent
    assert code_measurement(installed) == first
    relative = {p.relative_to(installed).as_posix() for p in measured_files()}
    assert "aggregator/measurement.py" in relative
    assert "__init__.py" in relative
    assert all(not name.startswith("__pycache__") for name in relative)
    artifacts = installed / "chain" / "artifacts"
    if artifacts.is_dir():
        for path in artifacts.glob("*.json"):
            assert path.relative_to(installed).as_posix() in relative


names = st.sampled_from(MEASURED)


@given(name=names, position=st.integers(min_value=0), value=st.integers(1, 255))
def test_any_byte_change_in_any_measured_file_changes_it(
    name: str, position: int, value: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = _make(Path(tmp))
        before = code_measurement(root)
        path = root / name
        data = bytearray(path.read_bytes())
        if data:
            data[position % len(data)] ^= value
        else:
            data.append(value)
        path.write_bytes(bytes(data))
        assert code_measurement(root) != before
