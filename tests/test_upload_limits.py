"""Upload limits are checked once, while the file streams in, and recorded with the upload.

- An upload accepted under one set of limits is read by a store with smaller ones (a worker or a
  dashboard started with other FLIPSCOPE_MAX_* values), and refused once its bytes changed.
- A file over a cap is refused before it is decoded whole: a CSV over the row cap without pandas
  ever being called and with little memory, an NPZ from its array headers.
- Data sets registered from the server's import folder (``flipscope data register``): paths out
  of the folder are refused, large files are kept by reference and refused once they change.
"""

from __future__ import annotations

import io
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import datasets.upload as upload_module
from app import uploads as uploads_module
from app.uploads import UploadStore
from datasets import DataValidationError
from datasets.upload import UploadLimits, read_table

MIB = 1024 * 1024
BIG = UploadLimits(max_bytes=4 * MIB, max_rows=50_000, max_columns=10)
SMALL = UploadLimits(max_bytes=10_000, max_rows=100, max_columns=3, max_cells=300)


def _frame(n: int = 3_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    return pd.DataFrame(
        {
            **{f"x{j}": x[:, j] for j in range(4)},
            "colour": rng.choice(["red", "green", "blue"], n),
            "label": np.where(x[:, 0] + x[:, 1] > 0, "yes", "no"),
        }
    )


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


# --------------------------------------------------------------------------- limits recorded
def test_an_upload_is_read_with_the_limits_it_passed(tmp_path):
    data = _csv(_frame())
    assert len(data) > SMALL.max_bytes
    upload_id, accepted = UploadStore(tmp_path, BIG).add_dataset(data, "people.csv", "label")
    with pytest.raises(DataValidationError):  # the reader's own limits would refuse the file
        read_table(data, "people.csv", SMALL)
    reader = UploadStore(tmp_path, SMALL)
    again = reader.dataset(upload_id)
    np.testing.assert_array_equal(again.X_train, accepted.X_train)
    assert again.class_names == accepted.class_names == ["no", "yes"]
    info = reader.info(upload_id)
    assert info.checked["limits"] == BIG.to_dict()
    assert (info.checked["rows"], info.checked["columns"], info.checked["bytes"]) == (
        3_000,
        6,
        len(data),
    )
    assert reader.read_limits(info) == SMALL.admitting(BIG)


def test_limits_admitting_takes_the_wider_of_each():
    merged = SMALL.admitting(BIG)
    assert (merged.max_bytes, merged.max_rows, merged.max_columns) == (4 * MIB, 50_000, 10)
    assert merged.max_cells == UploadLimits().max_cells  # SMALL's 300 is narrower
    assert UploadLimits(min_rows=50).admitting(UploadLimits(min_rows=20)).min_rows == 20
    assert UploadLimits.from_dict({**BIG.to_dict(), "from_a_later_version": 1}) == BIG


def test_a_stored_file_whose_bytes_changed_is_refused(tmp_path):
    store = UploadStore(tmp_path, BIG)
    upload_id, _ = store.add_dataset(_csv(_frame()), "people.csv", "label")
    path = tmp_path / upload_id / "data.bin"
    data = bytearray(path.read_bytes())
    row = data.index(b"\n") + 1
    data[row] = ord("9") if data[row] != ord("9") else ord("8")  # one digit of one cell
    path.write_bytes(bytes(data))
    with pytest.raises(
        DataValidationError, match=f"upload {upload_id} .* changed after it was checked"
    ):
        UploadStore(tmp_path, BIG).dataset(upload_id)


def test_a_stored_model_whose_bytes_changed_is_refused(tmp_path):
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    store = UploadStore(tmp_path, BIG)
    frame = _frame(300)[["x0", "x1", "label"]]
    data_id, dataset = store.add_dataset(_csv(frame), "t.csv", "label")
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(
        dataset.X_train, np.array(dataset.class_names)[dataset.y_train]
    )
    model_id, _ = store.add_model(sio.dumps(forest), "f.skops", data_id)
    assert (
        store.info(model_id).checked["bytes"] == (tmp_path / model_id / "data.bin").stat().st_size
    )
    (tmp_path / model_id / "data.bin").write_bytes(sio.dumps(forest.set_params(n_estimators=2)))
    with pytest.raises(DataValidationError, match="changed after it was checked"):
        UploadStore(tmp_path, BIG).model(model_id)


# --------------------------------------------------------------------------- streaming caps
def test_a_csv_over_the_row_cap_is_refused_before_it_is_decoded(monkeypatch):
    """200 MB of CSV over the row cap: refused from a scan of its line breaks, with pandas'
    reader never called and a few MB of memory (pandas would need about 1 GB for it)."""
    data = b"x0,label\n" + b"1,0\n" * (50 * MIB)  # 200 MiB, 52 million rows
    limits = UploadLimits(max_bytes=256 * MIB, max_rows=1_000_000)

    def no_pandas(*args, **kwargs):
        raise AssertionError("pandas read the file")

    monkeypatch.setattr(pd, "read_csv", no_pandas)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(DataValidationError, match="more than 1,000,000 rows"):
            read_table(data, "big.csv", limits)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MIB, f"{peak / MIB:.0f} MiB to refuse the file"
    assert seconds < 10, f"{seconds:.1f} s to refuse the file"


@pytest.mark.parametrize("chunk", [1, 5, 64, upload_module.CHUNK])
def test_the_row_count_is_exact_at_the_cap(monkeypatch, chunk):
    """Quoted line breaks, doubled quotes, CRLF and blank lines, cut at any chunk boundary:
    a file of n rows is accepted with max_rows = n and refused with n - 1."""
    monkeypatch.setattr(upload_module, "CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    n = 60
    texts = ["plain", 'say "hi"', "two\nlines", "crlf\r\nline", "", "a,b"]
    frame = pd.DataFrame(
        {
            "x": np.arange(n),
            "t": [texts[i % len(texts)] for i in range(n)],
            "label": np.arange(n) % 2,
        }
    )
    for ending in ("\n", "\r\n"):
        text = frame.to_csv(index=False, lineterminator=ending)
        text = text.replace(f"{ending}7,", f"{ending}{ending}7,") + ending  # blank lines
        data = text.encode()
        assert len(read_table(data, "q.csv", UploadLimits(max_rows=n))) == n
        with pytest.raises(DataValidationError, match=f"more than {n - 1} rows"):
            read_table(data, "q.csv", UploadLimits(max_rows=n - 1))
        cut = int(rng.integers(1, len(data)))
        assert read_table(data[:cut] + data[cut:], "q.csv", UploadLimits(max_rows=n)).shape == (
            n,
            3,
        )


def test_an_npz_over_a_cap_is_refused_from_its_headers(monkeypatch):
    buf = io.BytesIO()
    np.savez(buf, X=np.zeros((300, 4)), y=np.arange(300) % 2)

    def no_load(*args, **kwargs):
        raise AssertionError("the arrays were loaded")

    monkeypatch.setattr(np, "load", no_load)
    with pytest.raises(DataValidationError, match="300 rows and 5 columns"):
        read_table(buf.getvalue(), "d.npz", UploadLimits(max_rows=100))


def test_parquet_is_read_in_row_groups(monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = _frame(1_000)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf, row_group_size=128)
    whole = pq.ParquetFile.read
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("read whole"))
    got = read_table(buf.getvalue(), "d.parquet")
    monkeypatch.setattr(pq.ParquetFile, "read", whole)
    assert pq.ParquetFile(io.BytesIO(buf.getvalue())).num_row_groups == 8
    pd.testing.assert_frame_equal(got, frame, check_dtype=False)


# --------------------------------------------------------------------------- registration
@pytest.fixture
def import_dir(tmp_path) -> Path:
    folder = tmp_path / "import"
    (folder / "tables").mkdir(parents=True)
    return folder


def test_a_large_registered_file_is_kept_by_reference(tmp_path, import_dir, monkeypatch):
    monkeypatch.setattr(uploads_module, "COPY_UP_TO", 10_000)
    monkeypatch.setattr(uploads_module, "FINGERPRINT_BLOCK", 4096)
    path = import_dir / "tables" / "people.parquet"
    _frame(20_000).to_parquet(path)
    assert path.stat().st_size > 10_000
    store = UploadStore(tmp_path / "uploads", BIG)
    upload_id, dataset = store.register_dataset("tables/people.parquet", import_dir, "label")
    info = store.info(upload_id)
    assert info.filename == "tables/people.parquet"  # messages name it, never by server path
    assert info.source["path"] == str(path.resolve()) and info.source["size"] == path.stat().st_size
    assert not (tmp_path / "uploads" / upload_id / "data.bin").exists()  # not copied
    assert info.checked["rows"] == 20_000 and info.owner is None
    reader = UploadStore(tmp_path / "uploads", SMALL)  # a worker with smaller limits
    np.testing.assert_array_equal(reader.dataset(upload_id).X_test, dataset.X_test)

    # The same size and time, other bytes in its footer: refused.
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    uploads_module._cached_dataset.cache_clear()
    with pytest.raises(DataValidationError, match="changed after it was checked") as info_:
        reader.dataset(upload_id)
    assert str(tmp_path) not in str(info_.value)  # no server path in the message
    # A file appended to: its size and time changed.
    path.write_bytes(bytes(data) + b"\n")
    with pytest.raises(DataValidationError, match="register it again"):
        reader.dataset(upload_id)
    path.unlink()
    with pytest.raises(DataValidationError, match="cannot be read any more"):
        reader.dataset(upload_id)


def test_a_small_registered_file_is_copied(tmp_path, import_dir):
    path = import_dir / "small.csv"
    path.write_bytes(_csv(_frame(200)))
    store = UploadStore(tmp_path / "uploads")
    upload_id, _ = store.register_dataset(str(path), import_dir, "label", owner="ada@example.org")
    info = store.info(upload_id)
    assert not info.source and info.owner == "ada@example.org"
    assert (tmp_path / "uploads" / upload_id / "data.bin").read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    ("make", "given", "fragment"),
    [
        ("outside", "{outside}", "not inside the import folder"),
        ("outside", "../outside.csv", "'..' part"),
        ("outside", "tables/../../outside.csv", "'..' part"),
        ("file_link", "link.csv", "symbolic link 'link.csv'"),
        ("dir_link", "linked/outside.csv", "symbolic link 'linked'"),
        ("inside", "missing.csv", "no file 'missing.csv'"),
        ("inside", "tables", "not a regular file"),
        ("fifo", "pipe.csv", "not a regular file"),
    ],
)
def test_registration_refuses_paths_out_of_the_import_folder(
    tmp_path, import_dir, make, given, fragment
):
    outside = tmp_path / "outside.csv"
    outside.write_bytes(_csv(_frame(200)))
    if make == "file_link":
        (import_dir / "link.csv").symlink_to(outside)
    elif make == "dir_link":
        (import_dir / "linked").symlink_to(tmp_path)
    elif make == "fifo":
        os.mkfifo(import_dir / "pipe.csv")
    store = UploadStore(tmp_path / "uploads")
    with pytest.raises(DataValidationError, match=fragment):
        store.register_dataset(given.format(outside=outside), import_dir, "label")
    assert not [p for p in (tmp_path / "uploads").glob("*") if not p.name.startswith(".")]


def test_the_import_folder_may_itself_be_a_link(tmp_path, import_dir):
    (import_dir / "t.csv").write_bytes(_csv(_frame(200)))
    alias = tmp_path / "alias"
    alias.symlink_to(import_dir)
    store = UploadStore(tmp_path / "uploads")
    for given in ("t.csv", str(alias / "t.csv"), str(import_dir / "t.csv")):
        upload_id, _ = store.register_dataset(given, alias, "label")
        assert store.info(upload_id).filename == "t.csv"


def test_the_register_command(tmp_path, import_dir, monkeypatch, capsys):
    from app.cli import main

    monkeypatch.setenv("FLIPSCOPE_DATA_DIR", str(tmp_path / "data"))
    (import_dir / "t.csv").write_bytes(_csv(_frame(200)))
    monkeypatch.delenv("FLIPSCOPE_DATA_IMPORT_DIR", raising=False)
    assert main(["data", "register", "t.csv", "--label", "label"]) == 2
    assert "FLIPSCOPE_DATA_IMPORT_DIR" in capsys.readouterr().err
    monkeypatch.setenv("FLIPSCOPE_DATA_IMPORT_DIR", str(import_dir))
    args = ["data", "register", "t.csv", "--label", "label", "--owner", "Ada@Example.org"]
    assert main([*args, "--kind", "colour=drop"]) == 0
    out = capsys.readouterr().out
    upload_id = out.split("as upload ", 1)[1].split(":", 1)[0]
    info = uploads_module.upload_store().info(upload_id)
    assert info.owner == "ada@example.org" and info.options["kinds"] == {"colour": "drop"}
    assert f"upload:{upload_id}" in out and f"?data={upload_id}" in out
    monkeypatch.setenv("FLIPSCOPE_MAX_ROWS", "100")
    assert main(["data", "register", "t.csv", "--label", "label"]) == 1
    err = capsys.readouterr().err
    assert "more than 100 rows" in err and "FLIPSCOPE_MAX_ROWS=100" in err
    assert main(["data", "register", "t.csv", "--label", "label", "--kind", "colour"]) == 2


def test_an_empty_text_cell_gets_the_missing_value_message(tmp_path):
    """pandas' string dtype keeps an empty cell missing: its length is NaN, which once escaped
    the long-text check as a bare ValueError (the data page's generic error)."""
    data = b"x,t,label\n" + b"".join(
        b"%d,%s,%d\n" % (i, b"" if i == 3 else b"a", i % 2) for i in range(40)
    )
    assert read_table(data, "t.csv").shape == (40, 3)
    with pytest.raises(DataValidationError, match="column 't' has 1 missing values"):
        UploadStore(tmp_path).add_dataset(data, "t.csv", "label")
