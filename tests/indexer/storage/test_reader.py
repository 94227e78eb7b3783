"""Opening an index: what is wrong with a path is said as it is, not as "corrupted"."""

from __future__ import annotations

import os
import shutil

import pytest

from indexer.errors import IndexFormatError
from indexer.storage.reader import Index


def test_a_directory_is_not_called_corrupted(tmp_path):
    with pytest.raises(IndexFormatError, match="is a directory, not an index .no manifest.json"):
        Index(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_permission_denied(small_index, tmp_path):
    locked = tmp_path / "locked.h5"
    shutil.copy(small_index, locked)
    locked.chmod(0)
    with pytest.raises(IndexFormatError, match="permission denied"):
        Index(locked)
