"""Code versions: the closure of in-project imports, hashed without comments and docstrings;
package versions: major.minor of the numerical libraries."""

import textwrap
from importlib import metadata

import pytest

from hsbi.store import code
from hsbi.store.code import clear_code_cache, code_closure, code_version, package_key

FILES = {
    "pkgcv/__init__.py": "from pkgcv.sub import used\nfrom pkgcv.other import unused\n",
    "pkgcv/sub.py": '''
        """Used."""
        from . import helpers


        def used(x):
            from pkgcv.lazy import twice  # an import inside a function
            return twice(helpers.shift(x))
        ''',
    "pkgcv/helpers.py": "def shift(x):\n    return x + 1\n",
    "pkgcv/lazy.py": "def twice(x):\n    return 2 * x\n",
    "pkgcv/other.py": "def unused(x):\n    return x\n",
    "app.py": "from pkgcv import used\n\n\ndef main():\n    return used(1)\n",
}


@pytest.fixture
def tree(tmp_path, monkeypatch):
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    clear_code_cache()
    yield tmp_path
    clear_code_cache()


def _version(tree) -> str:
    clear_code_cache()
    return code_version("app:main", roots=("pkgcv", "app"))


def test_closure_follows_reexports_relative_and_function_imports(tree):
    modules = set(code_closure(["app:main"], {"pkgcv", "app"}))
    assert modules == {"app", "pkgcv", "pkgcv.sub", "pkgcv.helpers", "pkgcv.lazy"}


@pytest.mark.parametrize("file, old, new, changes", [
    ("pkgcv/lazy.py", "2 * x", "3 * x", True),
    ("pkgcv/helpers.py", "x + 1", "x + 2", True),
    ("pkgcv/sub.py", "return twice", "# a comment\n    return twice", False),
    ("pkgcv/sub.py", '"""Used."""', '"""Used, edited docstring."""', False),
    ("pkgcv/other.py", "return x", "return -x", False),  # re-exported, but not used
])
def test_edits(tree, file, old, new, changes):
    before = _version(tree)
    path = tree / file
    path.write_text(path.read_text().replace(old, new))
    assert (_version(tree) != before) is changes


def test_source_lookup_can_be_replaced(tree, monkeypatch):
    before = _version(tree)
    read = code._read
    monkeypatch.setattr(code, "_read", lambda p: read(p).replace("x + 1", "x - 1"))
    assert _version(tree) != before


def test_versions_kept_on_disk_are_the_closures(tree, tmp_path, monkeypatch):
    """The disk cache gives what the closure computes; any edit under a root is a new key (even
    in a module the closure does not reach); a skip without a cache_key is never cached."""
    monkeypatch.setenv("HSBI_CODE_CACHE", "")
    fresh = _version(tree)
    monkeypatch.setenv("HSBI_CODE_CACHE", str(tmp_path / "cache" / "versions.json"))
    assert _version(tree) == fresh
    with monkeypatch.context() as m:
        m.setattr(code, "_closure_version", lambda *a: pytest.fail("not read from disk"))
        assert _version(tree) == fresh
        other = tree / "pkgcv/other.py"
        other.write_text(other.read_text() + "\n\nCONSTANT = 1\n")
        with pytest.raises(pytest.fail.Exception):
            _version(tree)
    assert _version(tree) == fresh  # other.py is not in the closure
    entries = len(code._disk_read(tmp_path / "cache" / "versions.json"))
    clear_code_cache()
    code_version("app:main", roots=("pkgcv", "app"), skip=lambda m, n: False)
    assert len(code._disk_read(tmp_path / "cache" / "versions.json")) == entries


def test_a_new_minor_release_changes_the_package_key(monkeypatch):
    real = metadata.version
    base = package_key()

    def fake(minor: str):
        return lambda name: minor if name == "numpy" else real(name)

    monkeypatch.setattr(metadata, "version", fake("1.99.0"))
    minor = package_key()
    monkeypatch.setattr(metadata, "version", fake("1.99.7"))
    assert package_key() == minor != base  # a patch release does not change it


def test_a_new_minor_release_changes_task_addresses(monkeypatch):
    from luigi.task_register import Register

    from workflows.tasks import SimulateSamples

    def address() -> str:
        Register.clear_instance_cache()  # a new task object: its address is computed again
        return SimulateSamples(config="default").address

    before, real = address(), metadata.version
    monkeypatch.setattr(metadata, "version", lambda n: "0.1.0" if n == "torch" else real(n))
    assert address() != before
    monkeypatch.setattr(metadata, "version", real)
    assert address() == before
