"""Where numba caches hsbi's compiled kernels (``cache=True``): beside the module, or numba's
own fallback, the user's cache directory, where the checkout is read-only; a batch job whose user
can write neither (no home) would fail to compile, so it gets a temporary directory. Imported by
the modules that compile kernels (:mod:`hsbi.inference.kernels`, :mod:`hsbi.estimators.lre`)
before they define them; imports nothing of hsbi."""

from __future__ import annotations

import os
import tempfile

import numba as nb

__all__ = ["ensure_cache_dir"]


def ensure_cache_dir(module_file: str) -> None:
    """Point numba's cache at a temporary directory when neither ``module_file``'s folder nor the
    user's cache directory is writable (and no ``NUMBA_CACHE_DIR`` is set)."""
    if nb.config.CACHE_DIR or os.access(os.path.dirname(module_file), os.W_OK):
        return
    user_cache = os.path.join(os.path.expanduser("~"), ".cache")
    if not os.access(user_cache if os.path.isdir(user_cache) else os.path.expanduser("~"), os.W_OK):
        nb.config.CACHE_DIR = os.path.join(tempfile.gettempdir(), f"hsbi-numba-{os.getuid()}")
