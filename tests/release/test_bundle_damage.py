"""Damaged and odd bundles are refused with a BundleError (and by `citynerve update apply` with a
one-line error), never an untyped exception or a traceback: a real built bundle with a byte
flipped at many fixed offsets, cut short, and tarballs whose members collide."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

from citynerve.gateway.release import bundle as fmt
from tests.integration.conftest import gateway_config

from .conftest import ReleaseKey

OFFSETS = 16  # flipped bytes per bundle, evenly spread over the compressed stream


def _damaged(raw: bytes, offset: int) -> bytes:
    bad = bytearray(raw)
    bad[offset] ^= 0x55
    return bytes(bad)


def _offsets(size: int) -> list[int]:
    start = 10  # after gzip's fixed header (its mtime and flags change nothing unpacked)
    return [start + i * (size - start - 1) // (OFFSETS - 1) for i in range(OFFSETS)]


def test_a_real_bundle_damaged_anywhere_is_refused_typed(
    base_bundles: dict[str, Path], release_key: ReleaseKey, tmp_path: Path
) -> None:
    raw = base_bundles["1.0.0"].read_bytes()
    public = release_key.public.read_bytes()
    outcomes: dict[str, int] = {}
    # Evenly spread flips mostly change data (the manifest's hashes catch them); add, in each
    # eighth of the file, the first flip (if any) that breaks the deflate stream itself (zlib.error).
    starts = _offsets(len(raw))[::2]
    inflate = [o for o in (_inflate_breaker(start, raw) for start in starts) if o is not None]
    # Most of a bundle is wheels, stored: few flips break deflate, and where depends on the bundle's
    # bytes. The first block's header made reserved breaks it always.
    damaged = [_damaged(raw, o) for o in _offsets(len(raw)) + inflate] + [_reserved_first_block(raw)]
    for n, data in enumerate(damaged):
        path = tmp_path / f"bad-{n}.tar.gz"
        path.write_bytes(data)
        dest = tmp_path / f"out-{n}"
        dest.mkdir()
        try:
            fmt.verify(fmt.unpack(path, dest), public)
            kind = "accepted"  # a flip in what nothing reads (the tar's zero padding, the trailer)
        except fmt.BundleError as err:
            kind = err.reason.split(":", 1)[0]
        outcomes[kind] = outcomes.get(kind, 0) + 1
        path.unlink()
        shutil.rmtree(dest)
    assert sum(outcomes.values()) == OFFSETS + len(inflate) + 1
    assert outcomes.get("accepted", 0) <= 2, outcomes  # nearly every flip is caught
    stream = ("not a readable .tar.gz", "damaged tarball", "cannot unpack (damaged, or no room)")
    assert sum(outcomes.get(k, 0) for k in stream) >= len(inflate) + 1, outcomes
    for cut in (len(raw) // 3, len(raw) * 2 // 3, 5):  # cut inside the data, or in the header
        path = tmp_path / f"cut-{cut}.tar.gz"
        path.write_bytes(raw[:cut])
        (tmp_path / f"cut-{cut}").mkdir()
        with pytest.raises(fmt.BundleError):
            fmt.verify(fmt.unpack(path, tmp_path / f"cut-{cut}"), public)


def test_update_apply_answers_a_damaged_bundle_in_one_line(
    base_bundles: dict[str, Path], tmp_path: Path
) -> None:
    raw = base_bundles["1.0.0"].read_bytes()
    root = tmp_path / "opt"
    (root / "releases").mkdir(parents=True)
    config = gateway_config(tmp_path / "site", 5020, buses=1, units=1)
    # A damage that breaks the deflate stream (zlib.error), whatever the bundle's bytes.
    for name, data in (("flipped", _reserved_first_block(raw)), ("truncated", raw[: len(raw) // 2])):
        bad = tmp_path / f"{name}.tar.gz"
        bad.write_bytes(data)
        cmd = [sys.executable, "-m", "citynerve.gateway.cli", "update", "apply", str(bad)]
        proc = subprocess.run([*cmd, "--root", str(root), "-c", str(config), "--service", "process"],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode != 0, (name, proc.stdout)
        err = proc.stderr.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1, (name, err)
        assert f"refused {bad}" in err, (name, err)
    assert not any((root / "releases").iterdir())  # nothing installed


def _inflate_breaker(start: int, raw: bytes) -> int | None:
    """The first offset from `start` (in steps of 101 bytes, 100 tries) whose flip makes inflating
    the file fail, found the same way every run."""
    tries = range(start, min(start + 101 * 100, len(raw)), 101)
    return next((o for o in tries if _inflate_fails(_damaged(raw, o))), None)


def _reserved_first_block(raw: bytes) -> bytes:
    """`raw` with its first deflate block's type made the reserved one (BTYPE 11): inflating it
    fails at once, whatever the bundle holds."""
    start = raw.index(b"\0", 10) + 1 if raw[3] & 0x08 else 10
    bad = bytearray(raw)
    bad[start] |= 0x06
    assert _inflate_fails(bytes(bad))
    return bytes(bad)


def _inflate_fails(data: bytes) -> bool:
    """The deflate stream itself is broken (not only the gzip trailer's CRC, which tarfile never
    reads): inflated raw, after gzip's header (10 bytes, then the file name tarfile writes)."""
    start = data.index(b"\0", 10) + 1 if data[3] & 0x08 else 10
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        for i in range(start, len(data), 1 << 16):
            d.decompress(data[i : i + (1 << 16)])
    except zlib.error:
        return True
    return False


def _tar(path: Path, members: list[tuple[str, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([("top/a", b"x"), ("top/a", None)], "in the bundle twice"),
        ([("top/a", b"x"), ("top/a", b"y")], "in the bundle twice"),
        ([("top/a", None), ("top/a", b"x")], "in the bundle twice"),
        ([("top/a", b"x"), ("top/a/b", b"y")], "beneath the file 'top/a'"),
        ([("top/a", b"x"), ("top/a/b/c", None)], "beneath the file 'top/a'"),
        ([("top/a/b", b"y"), ("top/a", b"x")], "is a file and a folder"),
    ],
)
def test_colliding_members_are_refused_before_anything_is_written(
    tmp_path: Path, members: list[tuple[str, bytes | None]], why: str
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(fmt.BundleError, match=why):
        fmt.unpack(_tar(tmp_path / "b.tar.gz", members), dest)
    assert not any(dest.iterdir())
