"""Atomic writers leave the target complete and no temporary file behind."""

import matplotlib.pyplot as plt

from lightning_mp3d.atomic import save_figure_atomic, write_text_atomic


def test_write_text_atomic_creates_parents_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "stamp.json"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["stamp.json"]


def test_save_figure_atomic_writes_a_png(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure_atomic(fig, tmp_path / "fig" / "plot.png")
    plt.close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["plot.png"]


def test_concurrent_writers_of_one_target_never_share_a_temporary_file(tmp_path):
    import threading

    target = tmp_path / "out" / "record.json"
    texts = [str(i) * 200_000 for i in range(8)]
    errors: list[BaseException] = []

    def write(text: str) -> None:
        try:
            for _ in range(5):
                write_text_atomic(target, text)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=write, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert target.read_text() in texts  # one writer's complete text, never a mix
    assert sorted(p.name for p in target.parent.iterdir()) == ["record.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    import pytest

    from lightning_mp3d.atomic import atomic_path

    target = write_text_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_image_shards_appear_only_complete(tmp_path):
    import pytest

    from lightning_mp3d.datamodules.shards import AtomicShardWriter

    with AtomicShardWriter(str(tmp_path / "ok-%06d.tar"), maxcount=2, verbose=0) as sink:
        for i in range(3):
            sink.write({"__key__": f"{i:03d}", "x.npy": b"data"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok-000000.tar", "ok-000001.tar"]
    with pytest.raises(RuntimeError), AtomicShardWriter(str(tmp_path / "bad-%06d.tar"), maxcount=2, verbose=0) as sink:
        for i in range(3):
            sink.write({"__key__": f"{i:03d}", "x.npy": b"data"})
        raise RuntimeError("killed while writing the second shard")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["bad-000000.tar", "ok-000000.tar", "ok-000001.tar"], names  # the partial second shard is gone
