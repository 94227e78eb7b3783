"""Checksums written at build time: what full, fast and off verification catch, the content id
a damaged copy cannot claim, and files built before checksums existed."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from indexer.errors import IndexFormatError
from indexer.storage.reader import Index, parse_meta


@pytest.fixture
def copy(small_index, tmp_path):
    out = tmp_path / "copy.h5"
    shutil.copy(small_index, out)
    return out


def write_nan_factor(path) -> None:
    """Make the first value of row 0 a NaN (bf16 0x7FC0), checksums left as they were."""
    with Index(path) as index:
        offset = index.file["factors"].id.get_offset()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xc0\x7f")


def flip_factor_byte(path, at: int | range = 10) -> None:
    """XOR 0xFF into the factor bytes at ``at`` (offsets into the factor array)."""
    with Index(path) as index:
        offset = index.file["factors"].id.get_offset()
    spots = [at] if isinstance(at, int) else list(at)
    with open(path, "r+b") as fh:
        fh.seek(offset + spots[0])
        raw = bytearray(fh.read(spots[-1] - spots[0] + 1))
        for i in spots:
            raw[i - spots[0]] ^= 0xFF
        fh.seek(offset + spots[0])
        fh.write(raw)


def report(path, mode):
    with Index(path) as index:
        return index.verify(mode)


def test_full_verification_finds_a_flipped_factor_byte(copy, small_index):
    clean = report(copy, "full")
    assert clean.method == "checksums" and clean.checked_bytes > 0 and clean.content_id
    flip_factor_byte(copy)
    with pytest.raises(IndexFormatError, match=r"factor rows 0\.\.59 do not match"):
        report(copy, "full")
    assert report(copy, "fast").content_id is None  # fast does not read the factors
    assert report(copy, "off").method == "none"


def test_damaged_examples_and_curvature_fail_fast_verification(copy):
    with h5py.File(copy, "r+") as f:
        f["examples/meta"][7] = "{not json"
    with pytest.raises(IndexFormatError, match=r"examples 0\.\.59 do not match"):
        report(copy, "fast")
    with Index(copy) as index:  # unverified reads still never fail on the row
        assert index.example(7).meta == {"_unparsed": "{not json"}


def test_non_finite_curvature_is_refused(copy):
    with h5py.File(copy, "r+") as f:
        name = next(iter(f["curvature"]))
        f[f"curvature/{name}/sigma2"][0] = np.nan
    with pytest.raises(IndexFormatError, match=f"layer {name}: the curvature basis"):
        report(copy, "fast")


def test_content_id_follows_the_bytes_not_the_recorded_fingerprint(copy, small_index, tmp_path):
    assert report(copy, "full").content_id == report(small_index, "full").content_id
    # A damaged copy that also rewrote its checksums still cannot claim the content id.
    flip_factor_byte(copy)
    with Index(copy) as index:
        from indexer.storage import integrity

        blocks = integrity.factor_digests(
            index.store().array, int(index.file["integrity"].attrs["block_rows"])
        )
        fingerprint = index.fingerprint
    with h5py.File(copy, "r+") as f:
        f["integrity/factors"][...] = blocks
    forged = report(copy, "full")
    with Index(copy) as index:
        assert index.fingerprint == fingerprint  # it still claims the original fingerprint
    assert forged.content_id != report(small_index, "full").content_id


def test_a_file_without_checksums_is_checked_by_its_fingerprint(copy):
    with h5py.File(copy, "r+") as f:
        del f["integrity"]
    legacy = report(copy, "full")
    assert legacy.method == "fingerprint" and legacy.content_id
    flip_factor_byte(copy)
    with pytest.raises(IndexFormatError, match="fingerprint"):
        report(copy, "full")


def test_metadata_that_is_not_an_object_is_kept_raw():
    assert parse_meta('{"play": "hamlet"}') == {"play": "hamlet"}
    assert parse_meta("[1, 2]") == {"_unparsed": "[1, 2]"}
    assert parse_meta("{not json") == {"_unparsed": "{not json"}


def test_a_hand_edited_manifest_is_refused_at_open(copy):
    """A single file's manifest is under a checksum: an edited damping is refused at open."""
    with h5py.File(copy, "r+") as f:
        raw = json.loads(f["manifest"][()])
        raw["curvature"]["damping"] = 10.0
        del f["manifest"]
        f.create_dataset("manifest", data=json.dumps(raw), dtype=h5py.string_dtype())
    with pytest.raises(IndexFormatError, match="manifest does not match its checksum"):
        Index(copy)
