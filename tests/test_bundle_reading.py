"""Hostile test of issue 20: ``submit_many`` held every candidate's files whole before the batches
removed duplicates (1.3 GB for 30 candidates sharing a 20 MB file). Folders are now hashed first
and each distinct content kept once; measured in a child process (its peak resident memory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from codecbench import bundles

_PEAK_GROWTH = """
import resource, sys
from pathlib import Path
from codecbench import bundles
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
found, contents = bundles.bundles_from_dirs(Path(p) for p in sys.argv[1:])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, len(found), len(contents))
"""


def test_candidates_sharing_a_big_file_hold_one_copy_of_it(tmp_path: Path) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(os.urandom(8 * 1024 * 1024))
    folders = []
    for i in range(30):
        folder = tmp_path / f"cand-{i}"
        folder.mkdir()
        (folder / "codec.py").write_text(f"# candidate {i}\n")
        os.link(weights, folder / "weights.bin")  # the same content, no disk for it
        folders.append(str(folder))
    out = subprocess.run([sys.executable, "-c", _PEAK_GROWTH, *folders], capture_output=True, text=True, check=True)
    growth, count, distinct = (int(x) for x in out.stdout.split())
    assert (count, distinct) == (30, 31)  # 30 codec.py, one weights.bin
    assert growth < 3 * weights.stat().st_size, growth  # 30 copies would be 240 MB

    found, contents = bundles.bundles_from_dirs(Path(f) for f in folders[:2])
    single = bundles.bundle_from_dir(Path(folders[0]))
    assert [(f.name, f.sha256, f.size_bytes) for f in found[0].files] == [
        (f.name, f.sha256, f.size_bytes) for f in single.files]
    assert not any(f.content for b in found for f in b.files)
    assert all(contents[f.sha256] == f.content for f in single.files)
