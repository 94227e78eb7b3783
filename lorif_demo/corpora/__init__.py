"""Built-in corpora (offline, from PyPI packages)."""
