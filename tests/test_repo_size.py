"""The repository stays small: tracked files under 32 MiB in all, and no raw fp32 weights in runs/.

Sizes are those of the blobs git stores for the tracked files (the index), so local edits and untracked files
(e.g. the ``final_model.pt`` every run keeps on disk) do not count."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 32 * 2**20  # 33,554,432


def _git(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["git", "-C", str(REPO), *args], input=stdin, capture_output=True, check=True).stdout


def _tracked_sizes() -> dict[str, int]:
    try:
        listing = _git("ls-files", "-z", "--stage")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    entries = [line.split(b"\t", 1) for line in listing.split(b"\0") if line]
    paths = [path.decode() for _, path in entries]
    blobs = [meta.split()[1] for meta, _ in entries]
    sizes = _git("cat-file", "--batch-check=%(objectsize)", stdin=b"\n".join(blobs) + b"\n").split()
    return {p: int(s) for p, s in zip(paths, sizes, strict=True)}


def test_tracked_files_stay_under_32_mib():
    sizes = _tracked_sizes()
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    assert all(size <= LIMIT_BYTES for size in sizes.values()), f"tracked files over 32 MiB: {largest}"
    assert sum(sizes.values()) < LIMIT_BYTES, (f"tracked files total {sum(sizes.values()):,} bytes, over "
                                               f"{LIMIT_BYTES:,}; largest: {largest}")


def test_no_raw_weights_are_tracked():
    """Runs keep their quantized artifact in git; raw weights stay local (docs/run-folders.md)."""
    weights = [p for p in _tracked_sizes() if p.startswith("runs/") and p.endswith("final_model.pt")]
    assert weights == []
