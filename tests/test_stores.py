"""The store cache under concurrent jobs: one cuts, the others wait and read its store."""

import threading
import time
from pathlib import Path

import pytest

from oneclass import recipe as recipes
from oneclass.errors import OneclassError
from oneclass.data.extract import extract
from oneclass.stores import cache_dir, extraction_params, lock_file, make_dataset, obtain_store, store_key

ROOT = Path(__file__).resolve().parents[1]
fcntl = pytest.importorskip("fcntl", reason="no flock here (Windows): jobs cut a store each, unlocked")


def test_a_job_waits_for_the_job_cutting_its_store_and_reads_that_store(tmp_path, monkeypatch):
    monkeypatch.setenv("ONECLASS_CACHE", str(tmp_path / "cache"))
    config = recipes.load(ROOT / "recipes/demo.yaml", ["dataset.normal=2", "dataset.anomalous=2"])
    dataset, params = make_dataset(config), extraction_params(config)
    path = cache_dir() / f"{dataset.name}-{store_key(dataset, params)}"
    lock = lock_file(path)
    lock.parent.mkdir(parents=True)
    events, opened = [], []
    with open(lock, "a") as held:  # the first job, cutting
        fcntl.flock(held, fcntl.LOCK_EX)
        second = threading.Thread(target=lambda: opened.append(obtain_store(config, events.append)))
        second.start()
        deadline = time.monotonic() + 30
        while not events and time.monotonic() < deadline:
            time.sleep(0.05)
        assert events == [{"event": "store_wait", "path": str(path)}]
        assert second.is_alive() and not path.exists()  # waiting, not cutting its own
        extract(dataset, params, path, overwrite=True, recipe=config.to_dict())
        cut = (path / "images.npy").stat().st_ino
    second.join(timeout=60)
    assert events[1:] == [{"event": "store", "path": str(path), "cached": True}]
    assert (path / "images.npy").stat().st_ino == cut  # read, not cut again over the first job's
    assert opened[0].path == path and len(opened[0]) > 0
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no stray lock or temp folder


def test_a_read_only_cache_under_torchrun_is_read_when_it_holds_the_store(tmp_path, monkeypatch):
    """Rank 0 checks the other ranks see its cache by leaving a file there; a cache it
    cannot write (a shared read-only one) is fine when the store is already in it, and one
    line naming the cache when it is not. Rank 0's side of a two-rank group, the other
    rank answering as rank 0 does (tests/test_distributed.py runs two real ranks)."""
    from oneclass import distributed

    def rank_0_of_two_in_a_read_only_cache():
        monkeypatch.setattr(distributed, "_GROUP", distributed.Group(0, 2, 0))
        monkeypatch.setattr(distributed, "from_rank0", lambda value: value)
        monkeypatch.setattr(distributed, "every_rank", lambda value: [value, value])
        monkeypatch.setattr(distributed, "barrier", lambda: None)
        monkeypatch.setattr(Path, "touch", read_only)

    def read_only(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setenv("ONECLASS_CACHE", str(tmp_path / "cache"))
    config = recipes.load(ROOT / "recipes/demo.yaml", ["dataset.normal=2", "dataset.anomalous=2"])
    rank_0_of_two_in_a_read_only_cache()
    with pytest.raises(OneclassError, match=r"^ONECLASS_CACHE \(.*cache\): rank 0 cannot write there "
                                            r"\(Permission denied\); the patch store is cut into it$"):
        obtain_store(config, lambda event: None)
    monkeypatch.undo()
    monkeypatch.setenv("ONECLASS_CACHE", str(tmp_path / "cache"))
    obtain_store(config, lambda event: None)  # one process cuts it
    rank_0_of_two_in_a_read_only_cache()
    events = []
    assert len(obtain_store(config, events.append)) > 0
    assert events[-1]["cached"] is True


def test_a_store_that_cannot_take_its_place_is_kept_where_the_error_says(tmp_path):
    """Another process made OUT a folder of its own while the store was cut: the store is
    not moved over it, and the message names the hidden folder it stays in, which was
    deleted right after (hours of slides lost)."""
    from oneclass.data.datasets.synthetic import SyntheticDataset
    from oneclass.data.extract import ExtractParams

    out = tmp_path / "store"

    def taken(chunk):
        if not out.exists():
            out.mkdir()
            (out / "notes.txt").write_text("mine")

    dataset = SyntheticDataset(None, SyntheticDataset.Options(normal=2, anomalous=1, height=64, width=64))
    with pytest.raises(OneclassError, match=r"no longer a oneclass store folder; the new one is kept at (\S+)") as caught:
        extract(dataset, ExtractParams(size=32, stride=32), out, on_task=taken)
    kept = Path(str(caught.value).rsplit(" ", 1)[1])
    assert (kept / "meta.json").is_file() and (out / "notes.txt").read_text() == "mine"
