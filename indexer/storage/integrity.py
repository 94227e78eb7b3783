"""Content checksums: written when an index is published, checked before it is served.

The factors are split into blocks of ``block_rows`` rows and the examples into the same row
blocks; each block gets a blake2b-128 digest, and the curvature basis and the stored projections
one digest each (group ``integrity``, docs/index-format.md). A reader checks

- ``full``: everything above, every stored byte (the factors in parallel threads, ~1 GB/s per
  core), and the finiteness of the basis;
- ``fast``: the curvature, projections and examples, not the factor blocks;
- ``off``: nothing.

A failure names what is corrupted (a layer, a field, the rows of a block). Files written before
checksums existed are checked by recomputing their whole-file fingerprint (``full``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import h5py
import numpy as np
import numpy.typing as npt

from ..curvature.base import Basis
from ..errors import IndexFormatError
from .format import curvature_bytes

ALGORITHM = "blake2b-128"
BLOCK_BYTES = 16 << 20  # factor bytes per checksum block
VerifyMode = Literal["full", "fast", "off"]
EXAMPLE_FIELDS = ("prompt", "completion", "meta")


@dataclass
class VerifyReport:
    mode: str
    checked_bytes: int  # factor bytes read and hashed
    seconds: float
    method: str  # "checksums", "fingerprint" (a file without checksums) or "none"
    # A digest of the content as this process read it (None unless every byte was checked):
    # what a shared cache may be keyed on, since a damaged copy cannot produce it.
    content_id: str | None = None


def _digest(chunks: Iterable[bytes | memoryview]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for chunk in chunks:
        h.update(chunk)
    return h.digest()


def block_rows_for(row_bytes: int) -> int:
    return max(1, BLOCK_BYTES // max(1, row_bytes))


def _blocks(n: int, block_rows: int) -> list[tuple[int, int]]:
    return [(s, min(s + block_rows, n)) for s in range(0, n, block_rows)] or [(0, 0)]


def factor_digests(
    factors: npt.NDArray[Any], block_rows: int, threads: int = 1
) -> npt.NDArray[np.uint8]:
    """(n_blocks, 16) digests of consecutive row blocks; hashlib releases the GIL, so the
    blocks are hashed by ``threads`` threads at once."""

    def one(span: tuple[int, int]) -> bytes:
        return _digest([np.ascontiguousarray(factors[span[0] : span[1]]).data])

    spans = _blocks(factors.shape[0], block_rows)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        digests = list(pool.map(one, spans))
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(spans), 16).copy()


def _example_chunks(examples: h5py.Group, start: int, stop: int) -> Iterator[bytes]:
    for name in EXAMPLE_FIELDS:
        for text in examples[name].asstr()[start:stop]:
            raw = text.encode()
            yield len(raw).to_bytes(8, "little") + raw
    yield np.ascontiguousarray(examples["n_tokens"][start:stop], dtype="<i4").tobytes()


def example_digests(examples: h5py.Group, n: int, block_rows: int) -> npt.NDArray[np.uint8]:
    """(n_blocks, 16) digests of the examples' texts, metadata and token counts per row block."""
    digests = [_digest(_example_chunks(examples, s, e)) for s, e in _blocks(n, block_rows)]
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, 16).copy()


def curvature_digest(curvature: Basis) -> bytes:
    return _digest(curvature_bytes(curvature))


def projections_digest(f: h5py.File) -> bytes:
    if "projections" not in f:
        return _digest([])
    return _digest(
        np.ascontiguousarray(f[f"projections/{name}/{side}"][()], dtype="<f4").data
        for name in sorted(f["projections"])
        for side in ("in", "out")
    )


def write_rows(f: h5py.File, n: int, block_rows: int, factor_blocks: npt.NDArray[np.uint8]) -> None:
    """Write the ``integrity`` group's row checksums (factors and examples) of a file whose
    examples are final, given the factors' block digests (``factor_digests``, taken while they
    were mapped)."""
    if "integrity" in f:
        del f["integrity"]
    g = f.create_group("integrity")
    g.attrs["algorithm"] = ALGORITHM
    g.attrs["block_rows"] = block_rows
    g.create_dataset("factors", data=factor_blocks)
    g.create_dataset("examples", data=example_digests(f["examples"], n, block_rows))


def write_basis(f: h5py.File, curvature: Basis) -> None:
    """The basis checksums (curvature and projections) as attributes of ``integrity``."""
    g = f.require_group("integrity")
    g.attrs["algorithm"] = ALGORITHM
    g.attrs["curvature"] = curvature_digest(curvature).hex()
    g.attrs["projections"] = projections_digest(f).hex()


def write(
    f: h5py.File,
    n: int,
    block_rows: int,
    factor_blocks: npt.NDArray[np.uint8],
    curvature: Basis,
) -> None:
    """Write the whole ``integrity`` group of a single-file index (format 1)."""
    write_rows(f, n, block_rows, factor_blocks)
    write_basis(f, curvature)


def basis_digest(f: h5py.File) -> str:
    """The basis file's checksums as one hex string (curvature, then projections): what a
    sharded index's fingerprint covers of it."""
    g = f["integrity"]
    return str(g.attrs["curvature"]) + str(g.attrs["projections"])


def manifest_digest(hashed: dict[str, Any], fingerprint: str) -> str:
    """What a single-file index's ``integrity`` group records of its manifest: a digest of
    the fields the fingerprint covers (``Manifest.hashed``) and the fingerprint itself, so a
    hand edit of either is refused at open."""
    return _digest([json.dumps(hashed, sort_keys=True).encode(), fingerprint.encode()]).hex()


def check_manifest(f: h5py.File, path: Any, hashed: dict[str, Any], fingerprint: str) -> None:
    """IndexFormatError when a single file's manifest differs from the digest recorded at
    publish (files written before it was recorded have none to check)."""
    recorded = f["integrity"].attrs.get("manifest") if "integrity" in f else None
    if recorded is not None and recorded != manifest_digest(hashed, fingerprint):
        raise IndexFormatError(
            f"{path}: its manifest does not match its checksum (edited by hand or corrupted)"
        )


def rows_digest(f: h5py.File) -> str:
    """One digest of a file's row checksums (factors and examples): a shard's fingerprint."""
    g = f["integrity"]
    return _digest([g["factors"][()].tobytes(), g["examples"][()].tobytes()]).hex()


def check_curvature(curvature: Basis) -> None:
    """Finite basis, eigenvalues >= 0 and lambda > 0 in every layer (else IndexFormatError)."""
    for name, c in curvature.items():
        if not curvature.method.check(c):
            raise IndexFormatError(
                f"layer {name}: the curvature basis is not finite or not positive (corrupted)"
            )


def check_basis(f: h5py.File, curvature: Basis) -> None:
    """The curvature (finite, and as checksummed) and the projections of ``f``."""
    check_curvature(curvature)
    g = f["integrity"]
    bad = [
        what
        for what, want, got in (
            ("curvature basis", g.attrs["curvature"], curvature_digest(curvature).hex()),
            ("projections", g.attrs["projections"], projections_digest(f).hex()),
        )
        if want != got
    ]
    if bad:
        raise IndexFormatError(f"the {bad[0]} does not match its checksum (corrupted)")


def check_rows(
    f: h5py.File, factors: npt.NDArray[Any], mode: VerifyMode, threads: int = 1
) -> bytes:
    """The examples (``fast``) and also the factor rows (``full``) of ``f`` against its row
    checksums; returns the row digests as read (factor blocks + examples; b"" unless full)."""
    g = f["integrity"]
    n, block_rows = factors.shape[0], int(g.attrs["block_rows"])
    _compare(
        "examples", g["examples"][()], example_digests(f["examples"], n, block_rows), block_rows, n
    )
    if mode != "full":
        return b""
    blocks = factor_digests(factors, block_rows, threads)
    _compare("factor rows", g["factors"][()], blocks, block_rows, n)
    return bytes(blocks.tobytes() + g["examples"][()].tobytes())


def content_id(manifest: bytes, rows: Iterable[bytes], basis: h5py.File) -> str:
    """A digest of the content as this process read and checked it (manifest, every file's
    row digests, the basis checksums)."""
    g = basis["integrity"]
    return _digest(
        [
            manifest,
            *rows,
            bytes.fromhex(g.attrs["curvature"]),
            bytes.fromhex(g.attrs["projections"]),
        ]
    ).hex()


def verify(
    f: h5py.File,
    factors: npt.NDArray[Any],
    curvature: Basis,
    mode: VerifyMode,
    threads: int = 1,
) -> VerifyReport:
    """Check a published single-file index against its checksums (module docstring)."""
    t0 = time.perf_counter()
    if mode == "off":
        return VerifyReport(mode, 0, 0.0, "none")
    check_basis(f, curvature)
    rows = check_rows(f, factors, mode, threads)
    if mode == "fast":
        return VerifyReport(mode, 0, time.perf_counter() - t0, "checksums")
    manifest = f["manifest"][()]
    content = content_id(manifest if isinstance(manifest, bytes) else manifest.encode(), [rows], f)
    return VerifyReport(mode, factors.nbytes, time.perf_counter() - t0, "checksums", content)


def verify_by_fingerprint(
    mode: VerifyMode,
    factors: npt.NDArray[Any],
    curvature: Basis,
    recorded: str,
    compute: Callable[[], str],
) -> VerifyReport:
    """A file written before checksums existed: ``full`` recomputes its whole fingerprint
    (``compute``) and compares it with the ``recorded`` one; ``fast`` checks the basis."""
    t0 = time.perf_counter()
    if mode != "off":
        check_curvature(curvature)
    full = mode == "full"  # then the fingerprint is the content as read
    if full and compute() != recorded:
        raise IndexFormatError("content does not match its fingerprint (corrupted)")
    return VerifyReport(
        mode,
        factors.nbytes if full else 0,
        time.perf_counter() - t0,
        "fingerprint",
        content_id=recorded if full else None,
    )


def _compare(
    what: str, want: npt.NDArray[np.uint8], got: npt.NDArray[np.uint8], block_rows: int, n: int
) -> None:
    if want.shape != got.shape:
        raise IndexFormatError(
            f"{what}: {len(got)} checksum blocks, the file records {len(want)} (corrupted)"
        )
    wrong = np.flatnonzero((want != got).any(axis=1))
    if len(wrong):
        first = int(wrong[0]) * block_rows
        raise IndexFormatError(
            f"{what} {first}..{min(first + block_rows, n) - 1} do not match their checksum "
            f"({len(wrong)} of {len(want)} blocks differ; the file is corrupted)"
        )
