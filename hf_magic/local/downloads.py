"""Download a model repo file by file, so that progress shows bytes per file (and, summed, in total).

huggingface_hub's ``snapshot_download`` folds every file into one aggregated byte bar; downloading
each file with ``hf_hub_download`` and our own tqdm class keeps one bar per file.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..progress import ProgressCallback, event_tqdm

_MAX_WORKERS = 4
"""Parallel file downloads: enough to fill a link, few enough that each bar moves visibly."""


def file_tqdm(progress: ProgressCallback, filename: str) -> type:
    """A tqdm class for one file: its bars are labelled with the file name, whatever the hub calls them."""
    base: Any = event_tqdm(progress, "download")

    class FileTqdm(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["desc"] = filename
            super().__init__(*args, **kwargs)

    return FileTqdm


def download_snapshot(
    repo_id: str,
    allow_patterns: list[str] | None = None,
    progress: ProgressCallback | None = None,
    revision: str | None = None,
) -> Path:
    """Download the files of ``repo_id`` matching ``allow_patterns`` and return the snapshot folder.

    Each file reports its own ``download`` events (``unit="B"``, labelled with the file name), so a
    view can draw one bar per file and sum them for the total. Files already cached are skipped.

    Raises:
        huggingface_hub errors (``RepositoryNotFoundError``, ``GatedRepoError``, ``LocalEntryNotFoundError``...),
        translated into hf_magic's typed errors by the caller.
    """
    from huggingface_hub import hf_hub_download, snapshot_download

    # The hub's own "Fetching N files" counter would print to stderr; the byte bars say it all.
    quiet: Any = event_tqdm(lambda _event: None, "download")
    # A dry run lists the matching files with their sizes and cache state, and pins the commit.
    plan = snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns, dry_run=True, tqdm_class=quiet)
    commit = plan[0].commit_hash if plan else revision
    missing = [item.filename for item in plan if item.will_download]

    def fetch(filename: str) -> str:
        tqdm_class = file_tqdm(progress, filename) if progress else None
        return hf_hub_download(repo_id, filename, revision=commit, tqdm_class=tqdm_class)

    if missing:
        with ThreadPoolExecutor(max_workers=min(_MAX_WORKERS, len(missing))) as pool:
            list(pool.map(fetch, missing))
    # Everything is cached now: this call only links the snapshot and records the revision's ref.
    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns, tqdm_class=quiet))
