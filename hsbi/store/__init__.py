"""Content-addressed artifact store: addresses, atomic writes and verified reads."""

from hsbi.store.address import ADDRESS_LENGTH, canonical_json, code_version, make_address
from hsbi.store.store import MANIFEST_NAME, STORE_FORMAT, Artifact, Store, default_store_root

__all__ = [
    "ADDRESS_LENGTH",
    "MANIFEST_NAME",
    "STORE_FORMAT",
    "Artifact",
    "Store",
    "canonical_json",
    "code_version",
    "default_store_root",
    "make_address",
]
