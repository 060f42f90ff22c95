"""Datasets: local directories, validation carving, label checks, selection samples, demo data."""

from __future__ import annotations

import json
import logging
import re

import pandas as pd
import pytest

from pifi.artifacts import write_parquet
from pifi.data import (DatasetError, carve_validation, dataset_settings, overlap_line, prepare_splits,
                       selection_samples, stratified_sample)
from pifi.demo_data import DEMO_DATASETS, SPLIT_SIZES, demo_splits


def rows(n: int, *, classes: int = 2, offset: int = 0) -> list[dict]:
    return [{"text": f"sentence number {offset + i}", "label": i % classes} for i in range(n)]


def write_split(directory, split: str, records: list[dict], fmt: str = "jsonl") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(records)
    path = directory / f"{split}.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def local_spec(path, **extra) -> dict:
    return {"source": "local", "path": str(path), **extra}


@pytest.fixture
def local_dir(tmp_path):
    directory = tmp_path / "ds"
    write_split(directory, "train", rows(100))
    write_split(directory, "test", rows(30, offset=1000))
    return directory


# --- local directories ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_local_directory_gives_standard_frames(tmp_path, fmt):
    directory = tmp_path / fmt
    write_split(directory, "train", rows(100), fmt)
    write_split(directory, "test", rows(30, offset=1000), fmt)
    splits = prepare_splits("ds", local_spec(directory))
    assert list(splits) == ["train", "validation", "test"]
    for frame in splits.values():
        assert list(frame.columns) == ["row_id", "text", "label"]
        assert pd.api.types.is_integer_dtype(frame["label"])
    assert len(splits["train"]) == 80 and len(splits["validation"]) == 20 and len(splits["test"]) == 30
    assert splits["test"]["row_id"].tolist() == [f"test-{i:06d}" for i in range(30)]
    assert splits["test"]["text"].iloc[3] == "sentence number 1003"


def test_relative_path_is_resolved_against_base_dir(tmp_path, local_dir):
    splits = prepare_splits("ds", {"source": "local", "path": local_dir.name}, base_dir=tmp_path)
    assert len(splits["test"]) == 30


def test_a_missing_local_directory_names_its_absolute_path_and_the_base(tmp_path):
    with pytest.raises(DatasetError) as error:
        prepare_splits("mine", {"source": "local", "path": "../elsewhere/sst2"}, base_dir=tmp_path / "repo")
    expected = (tmp_path / "elsewhere" / "sst2").resolve()
    assert str(error.value) == (f"dataset 'mine': local directory {expected} does not exist "
                                f"('../elsewhere/sst2' is relative to {(tmp_path / 'repo').resolve()}, "
                                "the repository root)")


def test_validation_is_carved_from_train_stratified_and_seeded(local_dir):
    splits = prepare_splits("ds", local_spec(local_dir), validation_fraction=0.2, seed=3)
    train, validation = splits["train"], splits["validation"]
    assert len(validation) == 20
    assert validation["row_id"].str.startswith("train-").all()
    assert validation["label"].value_counts().to_dict() == {0: 10, 1: 10}  # stratified
    assert not set(train["row_id"]) & set(validation["row_id"])
    assert sorted(train["row_id"].tolist() + validation["row_id"].tolist()) == [f"train-{i:06d}" for i in range(100)]
    # a row keeps its text and label under its id
    original = {f"train-{i:06d}": r for i, r in enumerate(rows(100))}
    for row in validation.itertuples():
        assert (row.text, row.label) == (original[row.row_id]["text"], original[row.row_id]["label"])
    again = prepare_splits("ds", local_spec(local_dir), validation_fraction=0.2, seed=3)
    assert again["validation"]["row_id"].tolist() == validation["row_id"].tolist()
    other = prepare_splits("ds", local_spec(local_dir), validation_fraction=0.2, seed=4)
    assert other["validation"]["row_id"].tolist() != validation["row_id"].tolist()


def test_a_validation_file_is_used_as_is(local_dir):
    write_split(local_dir, "validation", rows(12, offset=500))
    splits = prepare_splits("ds", local_spec(local_dir))
    assert len(splits["train"]) == 100
    assert splits["validation"]["row_id"].tolist() == [f"validation-{i:06d}" for i in range(12)]


def test_carve_validation_keeps_class_proportions():
    frame = pd.DataFrame({"row_id": [f"train-{i:06d}" for i in range(90)], "text": ["x"] * 90,
                          "label": [0] * 60 + [1] * 30})
    train, validation = carve_validation(frame, 0.2, seed=0)
    assert validation["label"].value_counts().to_dict() == {0: 12, 1: 6}
    assert len(train) == 72


def test_a_class_too_rare_to_carve_validation_is_named_with_the_ways_out(tmp_path):
    directory = tmp_path / "ds"
    train = [{"text": f"text {i}", "label": 0 if i < 19 else 1} for i in range(19)] + [{"text": "lone", "label": 2}]
    write_split(directory, "train", train)
    write_split(directory, "test", [{"text": f"test {i}", "label": i % 3} for i in range(9)])
    with pytest.raises(DatasetError) as error:
        prepare_splits("ds", local_spec(directory))
    message = str(error.value)
    assert "dataset 'ds'" in message and "class 2 has 1 row" in message
    assert "provide a validation split" in message and "label_map" in message
    assert "least populated" not in message


def test_a_validation_fraction_too_small_for_the_classes_is_refused():
    frame = pd.DataFrame({"row_id": [f"train-{i:06d}" for i in range(30)], "text": ["x"] * 30,
                          "label": [0, 1, 2] * 10})
    with pytest.raises(DatasetError, match=r"dataset 'd': validation_fraction 0.05 of 30 train rows gives 2.*datasets.d.validation_fraction: 0.3"):
        carve_validation(frame, 0.05, seed=0, name="d")


def test_missing_columns_name_the_file_and_the_columns(tmp_path):
    directory = tmp_path / "ds"
    write_split(directory, "train", [{"sentence": r["text"], "label": r["label"]} for r in rows(20)])
    write_split(directory, "test", rows(10))
    with pytest.raises(DatasetError) as error:
        prepare_splits("ds", local_spec(directory))
    message = str(error.value)
    assert str(directory / "train.jsonl") in message
    assert "'text'" in message and "sentence" in message and "text_column" in message


def test_configured_column_names_are_renamed(tmp_path):
    directory = tmp_path / "ds"
    for split, n in (("train", 40), ("test", 10)):
        write_split(directory, split, [{"sentence": r["text"], "y": r["label"]} for r in rows(n)])
    splits = prepare_splits("ds", local_spec(directory, text_column="sentence", label_column="y"))
    assert list(splits["test"].columns) == ["row_id", "text", "label"]


def test_missing_label_column_is_named(tmp_path):
    directory = tmp_path / "ds"
    write_split(directory, "train", rows(20))
    write_split(directory, "test", [{"text": r["text"]} for r in rows(10)])
    with pytest.raises(DatasetError, match=r"test\.jsonl.*missing column\(s\) \['label'\]"):
        prepare_splits("ds", local_spec(directory))


def test_missing_test_split_is_an_error(tmp_path):
    directory = tmp_path / "ds"
    write_split(directory, "train", rows(20))
    with pytest.raises(DatasetError, match="no test split"):
        prepare_splits("ds", local_spec(directory))


def test_two_files_for_one_split_is_an_error(local_dir):
    write_split(local_dir, "test", rows(30), "csv")
    with pytest.raises(DatasetError, match="several files"):
        prepare_splits("ds", local_spec(local_dir))


def test_one_class_split_is_an_error(local_dir):
    write_split(local_dir, "test", [{"text": "only one", "label": 1}] * 10)
    with pytest.raises(DatasetError, match=r"'test' has one class only"):
        prepare_splits("ds", local_spec(local_dir))


def test_labels_must_be_zero_to_c_minus_one(tmp_path):
    directory = tmp_path / "ds"
    write_split(directory, "train", [{"text": r["text"], "label": r["label"] + 1} for r in rows(40)])
    write_split(directory, "test", [{"text": r["text"], "label": r["label"] + 1} for r in rows(10)])
    with pytest.raises(DatasetError, match=r"0\.\.C-1.*\[1, 2\].*label_map"):
        prepare_splits("ds", local_spec(directory))


def test_string_labels_need_a_label_map(tmp_path):
    directory = tmp_path / "ds"
    for split, n in (("train", 40), ("test", 10)):
        write_split(directory, split, [{"text": r["text"], "label": "pos" if r["label"] else "neg"} for r in rows(n)])
    with pytest.raises(DatasetError, match="label_map"):
        prepare_splits("ds", local_spec(directory))
    splits = prepare_splits("ds", local_spec(directory, label_map={"neg": 0, "pos": 1}))
    assert splits["test"]["label"].tolist() == [0, 1] * 5


def test_label_map_drops_unmapped_rows(tmp_path):
    """Tweet sentiment without neutral: 0 negative, 1 neutral (dropped), 2 positive -> 0, 1."""
    directory = tmp_path / "tweets"
    write_split(directory, "train", rows(90, classes=3))
    write_split(directory, "test", rows(30, classes=3, offset=1000))
    splits = prepare_splits("tweets", local_spec(directory, label_map={0: 0, 2: 1}))
    test = splits["test"]
    assert len(test) == 20
    assert sorted(test["label"].unique().tolist()) == [0, 1]
    # row ids still name the source position, so positions of dropped neutral rows are missing
    assert "test-000001" not in set(test["row_id"])
    by_id = dict(zip(test["row_id"], test["label"]))
    assert by_id["test-000000"] == 0 and by_id["test-000002"] == 1
    assert len(splits["train"]) + len(splits["validation"]) == 60


# --- selection samples ----------------------------------------------------------------------------------

def test_stratified_sample_returns_exactly_n_stratified_and_seeded():
    frame = pd.DataFrame({"row_id": [f"train-{i:06d}" for i in range(200)], "text": ["t"] * 200,
                          "label": [i % 4 for i in range(200)]})
    for n in (8, 40, 196, 200):
        sample = stratified_sample(frame, n, seed=0)
        assert len(sample) == n
        assert sample["row_id"].is_unique
    sample = stratified_sample(frame, 40, seed=0)
    assert sample["label"].value_counts().to_dict() == {0: 10, 1: 10, 2: 10, 3: 10}
    assert stratified_sample(frame, 40, seed=0)["row_id"].tolist() == sample["row_id"].tolist()
    assert stratified_sample(frame, 40, seed=1)["row_id"].tolist() != sample["row_id"].tolist()


def test_stratified_sample_of_almost_every_row():
    frame = pd.DataFrame({"row_id": [f"train-{i:06d}" for i in range(200)], "text": ["t"] * 200,
                          "label": [i % 4 for i in range(200)]})
    sample = stratified_sample(frame, 199, seed=0)
    assert len(sample) == 199 and sample["row_id"].is_unique


def test_stratified_sample_says_how_many_rows_are_available():
    frame = pd.DataFrame({"row_id": [f"train-{i:06d}" for i in range(30)], "text": ["t"] * 30,
                          "label": [i % 2 for i in range(30)]})
    with pytest.raises(DatasetError, match=r"n_samples is 31 but only 30 rows are available.*at most 30"):
        stratified_sample(frame, 31, seed=0, where="dataset 'x'")


@pytest.mark.parametrize("sample_split", ["train", "validation"])
def test_selection_samples_never_come_from_the_test_split(local_dir, sample_split):
    """The workflow's sampling: prepare_splits, then stratified_sample over the training-side frame."""
    splits = prepare_splits("ds", local_spec(local_dir), seed=0)
    source = splits[sample_split]
    sample = stratified_sample(source, min(48, len(source)), seed=0)
    assert not sample["row_id"].str.startswith("test-").any()
    assert set(sample["row_id"]) <= set(splits["train"]["row_id"]) | set(splits["validation"]["row_id"])
    assert set(sample["row_id"]) <= set(source["row_id"])
    assert not set(sample["text"]) & set(splits["test"]["text"])


def test_the_selection_rows_are_one_draw_never_from_test(tmp_path):
    """extract_hidden and cls_features both take their rows from selection_samples: a stratified draw of the
    prepared split, refused when a row is also a test row."""
    frame = pd.DataFrame({"row_id": [f"train-{i:06d}" for i in range(40)], "text": [f"t{i}" for i in range(40)],
                          "label": [i % 2 for i in range(40)]})
    write_parquet(tmp_path / "train.parquet", frame)
    write_parquet(tmp_path / "test.parquet", frame.assign(row_id=[f"test-{i:06d}" for i in range(40)]))
    drawn = selection_samples(tmp_path / "train.parquet", tmp_path / "test.parquet", 10, 3, dataset="ds")
    pd.testing.assert_frame_equal(drawn, stratified_sample(frame, 10, 3))
    write_parquet(tmp_path / "test.parquet", frame.iloc[:25])  # a test split holding copies of train's rows
    with pytest.raises(DatasetError, match=r"selection samples include \d+ test row"):
        selection_samples(tmp_path / "train.parquet", tmp_path / "test.parquet", 40, 3, dataset="ds")


# --- demo data ------------------------------------------------------------------------------------------

def test_demo_splits_are_deterministic():
    for name in DEMO_DATASETS:
        first, second = demo_splits(name, seed=0), demo_splits(name, seed=0)
        for split in SPLIT_SIZES:
            pd.testing.assert_frame_equal(first[split], second[split])
        assert not demo_splits(name, seed=1)["train"].equals(first["train"])


@pytest.mark.parametrize("name, classes", [("sentiment", [0, 1]), ("topic", [0, 1, 2])])
def test_demo_datasets_have_the_advertised_classes(name, classes):
    splits = prepare_splits(name, {"source": "demo", "name": name})
    for split, frame in splits.items():
        assert sorted(frame["label"].unique().tolist()) == classes
        assert frame["text"].str.len().min() > 0
    assert len(splits["test"]) == SPLIT_SIZES["test"]
    assert splits["validation"]["row_id"].str.startswith("validation-").all()


def test_unknown_demo_and_source_are_errors():
    with pytest.raises(ValueError, match="unknown demo dataset"):
        demo_splits("nope")
    with pytest.raises(DatasetError, match="unknown source"):
        prepare_splits("x", {"source": "ftp"})


# --- hub datasets (the hub itself is replaced by in-memory datasets: no network here) ------------------

@pytest.fixture
def fake_hub(monkeypatch):
    """datasets.load_dataset answering for a GLUE-SST-2-shaped dataset (sentence/label, train + validation)."""
    import datasets

    calls = []
    source = {
        "train": {"sentence": [f"train sentence {i}" for i in range(100)], "label": [i % 2 for i in range(100)]},
        "validation": {"sentence": [f"dev sentence {i}" for i in range(40)], "label": [i % 2 for i in range(40)]},
    }

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if name != "stanfordnlp/sst2" or split not in source:
            raise FileNotFoundError(f"{name} {split} is not on this fake hub")
        return datasets.Dataset.from_dict(source[split])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


SST2_HUB = {"source": "hub", "name": "stanfordnlp/sst2", "text_column": "sentence",
            "splits": {"train": "train", "validation": None, "test": "validation"}}


def test_hub_dataset_with_the_dev_set_as_test(fake_hub):
    """config.yaml's SST-2: GLUE's validation split is the test set, validation is carved from train."""
    splits = prepare_splits("sst2", SST2_HUB, seed=0)
    assert [call[2] for call in fake_hub] == ["train", "validation"]
    test = splits["test"]
    assert len(test) == 40 and test["text"].str.startswith("dev sentence").all()
    assert test["row_id"].str.startswith("validation-").all()  # ids name the source split
    assert len(splits["validation"]) == 20 and splits["validation"]["row_id"].str.startswith("train-").all()
    for sample_split in ("train", "validation"):
        sample = stratified_sample(splits[sample_split], 16, seed=0)
        assert not set(sample["row_id"]) & set(test["row_id"])
        assert not sample["text"].str.startswith("dev sentence").any()


def test_hub_failure_names_the_dataset_and_suggests_a_local_directory(fake_hub):
    spec = {**SST2_HUB, "name": "someone/missing"}
    with pytest.raises(DatasetError, match=r"'someone/missing'.*local directory"):
        prepare_splits("missing", spec)


def test_check_disjoint_refuses_shared_rows():
    from pifi.data import check_disjoint

    a = pd.DataFrame({"row_id": ["train-000001", "train-000002"]})
    check_disjoint(a, pd.DataFrame({"row_id": ["test-000001"]}), "selection samples", "test")
    with pytest.raises(DatasetError, match=r"selection samples include 1 test row\(s\), e.g. \['train-000002'\]"):
        check_disjoint(a, pd.DataFrame({"row_id": ["train-000002"]}), "selection samples", "test")


# --- bad input data: blank texts, unreadable files -----------------------------------------------------

BLANKS = {2: "", 5: "   ", 7: None}  # source position -> blank text (missing, empty, whitespace-only)


def rows_with_blanks(n: int = 20, column: str = "text") -> list[dict]:
    records = rows(n)
    for position, blank in BLANKS.items():
        records[position][column] = blank
    return records


def blank_text_dir(tmp_path, fmt: str):
    directory = tmp_path / fmt
    write_split(directory, "train", rows_with_blanks(), fmt)
    write_split(directory, "validation", rows(10, offset=500), fmt)  # so train is not carved
    write_split(directory, "test", rows(10, offset=1000), fmt)
    return directory


# where the blank rows 2, 5, 7 are: jsonl lines, csv lines (after the header), parquet positions
BLANK_LOCATIONS = {"jsonl": "line(s) 3, 6, 8 of the file", "csv": "line(s) 4, 7, 9 of the file",
                   "parquet": "row(s) 3, 6, 8 (1-based positions in the split)"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_blank_texts_are_an_error_naming_file_column_count_and_rows(tmp_path, fmt):
    directory = blank_text_dir(tmp_path, fmt)
    with pytest.raises(DatasetError) as error:
        prepare_splits("ds", local_spec(directory))
    message = str(error.value)
    assert f"dataset 'ds' train ({directory / f'train.{fmt}'})" in message
    assert "3 row(s) have a blank text in column 'text'" in message
    assert BLANK_LOCATIONS[fmt] in message
    # the fix for this dataset alone first, the project-wide one after it
    assert "set datasets.ds.drop_blank_texts: true to drop such rows (data.drop_blank_texts: true for every" in message


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_drop_blank_texts_drops_and_logs_them_and_ids_keep_source_positions(tmp_path, fmt, caplog):
    directory = blank_text_dir(tmp_path, fmt)
    with caplog.at_level(logging.WARNING, logger="pifi.data"):
        splits = prepare_splits("ds", local_spec(directory), drop_blank_texts=True)
    train = splits["train"]
    kept = [i for i in range(20) if i not in BLANKS]
    assert train["row_id"].tolist() == [f"train-{i:06d}" for i in kept]
    assert train["text"].tolist() == [f"sentence number {i}" for i in kept]
    assert len(splits["validation"]) == 10 and len(splits["test"]) == 10
    dropped = [record.getMessage() for record in caplog.records if "dropped" in record.getMessage()]
    assert len(dropped) == 1  # one line, for the one split that had blank rows
    assert "train" in dropped[0] and "dropped 3 of 20 row(s)" in dropped[0]


def test_blank_text_pair_is_handled_like_a_blank_text(tmp_path, caplog):
    directory = tmp_path / "pairs"
    train = [{**r, "hypothesis": f"pair {i}"} for i, r in enumerate(rows(20))]
    train[4]["hypothesis"] = " \t"
    write_split(directory, "train", train)
    write_split(directory, "test", [{**r, "hypothesis": "pair"} for r in rows(10)])
    spec = local_spec(directory, text_pair_column="hypothesis")
    with pytest.raises(DatasetError, match=r"1 row\(s\) have a blank text in column 'hypothesis' \(.*line\(s\) 5 "):
        prepare_splits("pairs", spec)
    with caplog.at_level(logging.WARNING, logger="pifi.data"):
        splits = prepare_splits("pairs", spec, drop_blank_texts=True)
    all_train_ids = set(splits["train"]["row_id"]) | set(splits["validation"]["row_id"])
    assert all_train_ids == {f"train-{i:06d}" for i in range(20) if i != 4}
    assert "dropped 1 of 20 row(s)" in caplog.text


def test_rows_left_out_by_label_map_need_no_text(tmp_path):
    directory = tmp_path / "tweets"
    train = rows(30, classes=3)
    train[1]["text"] = ""  # label 1 (neutral) is left out below
    write_split(directory, "train", train)
    write_split(directory, "test", rows(9, classes=3))
    splits = prepare_splits("tweets", local_spec(directory, label_map={0: 0, 2: 1}))
    assert len(splits["train"]) + len(splits["validation"]) == 20


def test_non_string_text_is_an_error_even_when_dropping_blanks(tmp_path):
    directory = tmp_path / "ds"
    train = rows(20)
    train[3]["text"] = 42
    write_split(directory, "train", train)
    write_split(directory, "test", rows(10))
    with pytest.raises(DatasetError, match=r"train\.jsonl.*column 'text' has 1 value\(s\) that are not text "
                                           r"\(e\.g\. 42\) at line\(s\) 4 of the file"):
        prepare_splits("ds", local_spec(directory), drop_blank_texts=True)


def test_blank_hub_texts_are_named_by_row_position(monkeypatch):
    import datasets

    source = {"sentence": [f"s {i}" for i in range(20)], "label": [i % 2 for i in range(20)]}
    source["sentence"][6] = "  "
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda name, config=None, split=None: datasets.Dataset.from_dict(source))
    with pytest.raises(DatasetError, match=r"hub:stanfordnlp/sst2.*column 'sentence'.*row\(s\) 7 \(1-based"):
        prepare_splits("sst2", SST2_HUB)


def test_jsonl_empty_lines_are_skipped_and_lines_still_counted(tmp_path):
    directory = tmp_path / "ds"
    write_split(directory, "test", rows(10))
    lines = [json.dumps(r) for r in rows(20)]
    lines[3] = json.dumps({"text": "", "label": 1})
    (directory / "train.jsonl").write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n\n")
    with pytest.raises(DatasetError, match=r"line\(s\) 5 of the file"):  # record 4 sits on line 5
        prepare_splits("ds", local_spec(directory))
    splits = prepare_splits("ds", local_spec(directory), drop_blank_texts=True)
    train_ids = set(splits["train"]["row_id"]) | set(splits["validation"]["row_id"])
    assert train_ids == {f"train-{i:06d}" for i in range(20) if i != 3}


def test_jsonl_float_labels_keep_todays_meaning(tmp_path):
    """Whole floats (1.0) are integer labels, as with pd.read_json; 0.5 still needs a label_map."""
    directory = tmp_path / "ds"
    write_split(directory, "train", [{"text": r["text"], "label": float(r["label"])} for r in rows(20)])
    write_split(directory, "test", [{"text": r["text"], "label": float(r["label"])} for r in rows(10)])
    assert prepare_splits("ds", local_spec(directory))["test"]["label"].dtype == "int64"
    write_split(directory, "test", [{"text": r["text"], "label": r["label"] / 2} for r in rows(10)])
    with pytest.raises(DatasetError, match="labels must be integers.*label_map"):
        prepare_splits("ds", local_spec(directory))


def test_malformed_jsonl_names_file_and_line(local_dir):
    lines = [json.dumps(r) for r in rows(5)]
    lines[2] = '{"text": "broken", "label": 1'
    path = local_dir / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(path))}:3: invalid JSON at column \d+: Expecting"):
        prepare_splits("ds", local_spec(local_dir))


def test_a_jsonl_line_that_is_not_an_object_names_file_and_line(local_dir):
    path = local_dir / "test.jsonl"
    path.write_text(json.dumps(rows(1)[0]) + "\n[1, 2]\n")
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(path))}:2: expected a JSON object per line, got list"):
        prepare_splits("ds", local_spec(local_dir))


@pytest.mark.parametrize("fmt, bad_line", [("jsonl", 3), ("csv", 4)])
def test_non_utf8_bytes_name_file_and_line(tmp_path, fmt, bad_line):
    directory = tmp_path / fmt
    write_split(directory, "train", rows(20), fmt)
    write_split(directory, "test", rows(10), fmt)
    path = directory / f"train.{fmt}"
    path.write_bytes(path.read_bytes().replace(b"sentence number 2", "caf\xe9 latin-1".encode("latin-1"), 1))
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(path))}:{bad_line}: .*must be UTF-8"):
        prepare_splits("ds", local_spec(directory))


def test_a_utf8_bom_is_accepted(local_dir):
    path = local_dir / "test.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(prepare_splits("ds", local_spec(local_dir))["test"]) == 30


def test_a_ragged_csv_names_the_file_and_the_line(tmp_path):
    directory = tmp_path / "csv"
    write_split(directory, "train", rows(20), "csv")
    path = directory / "test.csv"
    path.write_text("text,label\na,0\nb,1\nc,0,extra\n")
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(path))}: cannot parse the CSV: .*Expected 2 fields in line 4"):
        prepare_splits("ds", local_spec(directory))


def test_csv_line_numbers_follow_quoted_fields_over_several_lines(tmp_path):
    directory = tmp_path / "csv"
    train = rows(20)
    train[1]["text"] = "a review\nover\nthree lines"
    train[3]["text"] = ""
    write_split(directory, "train", train, "csv")
    write_split(directory, "test", rows(10), "csv")
    with pytest.raises(DatasetError, match=r"line\(s\) 7 of the file"):  # header, 0, 1 (3 lines), 2, then 3
        prepare_splits("ds", local_spec(directory))


def test_a_corrupt_parquet_names_the_file(tmp_path):
    directory = tmp_path / "parquet"
    write_split(directory, "train", rows(20), "parquet")
    path = directory / "test.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(path))}: cannot read the parquet file"):
        prepare_splits("ds", local_spec(directory))


# --- one message per problem, whatever the format -------------------------------------------------------

@pytest.mark.parametrize("fmt, content", [("jsonl", ""), ("jsonl", "\n\n"), ("csv", ""), ("csv", "text,label\n"),
                                          ("parquet", None)])
def test_an_empty_file_has_no_rows(tmp_path, fmt, content):
    """Not "missing column(s) ['text', 'label']": the file is there, with nothing in it."""
    directory = tmp_path / fmt
    write_split(directory, "train", rows(20), fmt)
    path = directory / f"test.{fmt}"
    if content is None:
        pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype="int64")}).to_parquet(path)
    else:
        path.write_text(content)
    with pytest.raises(DatasetError, match=rf"^dataset 'ds' test \({re.escape(str(path))}\): has no rows"):
        prepare_splits("ds", local_spec(directory))


# Whole-number labels, written every way a format allows: class indices in every format alike.
WHOLE_LABELS = {"jsonl": ['1.0', '"1.0"', '"1"', '1'], "csv": ["1.0", '"1.0"', "1", " 1"], "parquet": [1.0, "1.0", "1"]}


def _write_labels(directory, split: str, fmt: str, labels: list, texts_from: int = 0) -> None:
    """A split whose labels are written as given (raw JSON or CSV text, or parquet values)."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = [f"sentence number {texts_from + i}" for i in range(len(labels))]
    path = directory / f"{split}.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(f'{{"text": "{t}", "label": {label}}}\n' for t, label in zip(texts, labels)))
    elif fmt == "csv":
        path.write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in zip(texts, labels)))
    else:
        pd.DataFrame({"text": texts, "label": labels}).to_parquet(path)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_whole_number_labels_are_classes_in_every_format(tmp_path, fmt):
    for written in WHOLE_LABELS[fmt]:
        zero = written.replace("1", "0") if isinstance(written, str) else type(written)(0)  # class 0, written alike
        directory = tmp_path / f"{fmt}{len(list(tmp_path.iterdir()))}"
        _write_labels(directory, "train", fmt, [zero, written] * 10)
        _write_labels(directory, "test", fmt, [zero, written] * 4, texts_from=100)
        splits = prepare_splits("ds", local_spec(directory))
        assert splits["test"]["label"].dtype == "int64", written
        assert splits["test"]["label"].tolist() == [0, 1] * 4, written


@pytest.mark.parametrize("fmt, bad", [("jsonl", "0.5"), ("jsonl", '"0.5"'), ("csv", "0.5"), ("parquet", 0.5),
                                      ("parquet", "0.5")])
def test_a_label_that_is_not_a_whole_number_gets_one_message_naming_every_line(tmp_path, fmt, bad):
    directory = tmp_path / fmt
    _write_labels(directory, "train", fmt, [0, 1] * 10 if fmt != "csv" else ["0", "1"] * 10)
    labels = ([0, 1] if fmt != "csv" else ["0", "1"]) * 10
    if fmt == "parquet" and isinstance(bad, str):
        labels = [str(label) for label in labels]
    for position in (1, 4, 6, 9, 12, 15, 18):  # 7 bad rows: 5 named, then a count
        labels[position] = bad
    _write_labels(directory, "test", fmt, labels, texts_from=100)
    first_line = {"jsonl": 2, "csv": 3, "parquet": 2}[fmt]
    where = "line(s)" if fmt != "parquet" else "row(s)"
    with pytest.raises(DatasetError) as error:
        prepare_splits("ds", local_spec(directory))
    message = str(error.value)
    assert "labels must be integers (whole numbers" in message and "7 row(s) are not" in message
    assert f"{where} {first_line}, " in message and "(2 more)" in message and "label_map" in message


def test_label_map_keys_match_whole_numbers_however_written(tmp_path):
    """A CSV of 0.0/1.0/2.0 with label_map {0: 0, 2: 1}: the 1.0 rows are dropped, the others mapped."""
    directory = tmp_path / "csv"
    _write_labels(directory, "train", "csv", ["0.0", "1.0", "2.0"] * 10)
    _write_labels(directory, "test", "csv", ["0.0", "1.0", "2.0"] * 4, texts_from=100)
    splits = prepare_splits("ds", local_spec(directory, label_map={0: 0, "2": 1}))
    assert splits["test"]["label"].tolist() == [0, 1] * 4


# --- leakage and class checks ---------------------------------------------------------------------------

def _overlap_dir(tmp_path, shared: int = 6):
    """train 0..59, validation 500..519, test 1000..1029 with ``shared`` test texts copied from train
    (re-spaced: the check normalises whitespace) and 2 validation texts copied from train."""
    directory = tmp_path / "ds"
    test = rows(30, offset=1000)
    for i in range(shared):
        test[i]["text"] = f"  sentence   number {i}\t"
    validation = rows(20, offset=500)
    validation[0]["text"], validation[1]["text"] = "sentence number 10", "sentence number 11"
    write_split(directory, "train", rows(60))
    write_split(directory, "validation", validation)
    write_split(directory, "test", test)
    return directory


def test_texts_shared_between_splits_are_counted_and_warned(tmp_path, caplog):
    from pifi.data import prepare_dataset

    with caplog.at_level(logging.WARNING, logger="pifi.data"):
        splits, checks = prepare_dataset("ds", local_spec(_overlap_dir(tmp_path)))
    assert checks["split_overlap"] == {"mode": "warn", "train_validation": 2, "train_test": 6, "validation_test": 0,
                                       "test_rows_dropped": 0}
    assert len(splits["test"]) == 30
    assert "6 of 30 test row(s) share their text with train or validation" in caplog.text
    assert "test-000000" in caplog.text
    assert "2 validation row(s) share their text with train" in caplog.text


def test_shared_test_texts_can_be_an_error_or_dropped(tmp_path, caplog):
    from pifi.data import prepare_dataset

    directory = _overlap_dir(tmp_path)
    with pytest.raises(DatasetError, match=r"6 of 30 test row\(s\) share.*test-000000.*datasets.ds.split_overlap: drop_test"):
        prepare_dataset("ds", local_spec(directory), split_overlap_mode="error")
    with caplog.at_level(logging.WARNING, logger="pifi.data"):
        splits, checks = prepare_dataset("ds", local_spec(directory), split_overlap_mode="drop_test")
    assert checks["split_overlap"]["test_rows_dropped"] == 6 and len(splits["test"]) == 24
    assert not {f"test-{i:06d}" for i in range(6)} & set(splits["test"]["row_id"])  # ids keep source positions
    assert "dropped those test rows" in caplog.text
    # without shared test texts, error mode has nothing to refuse (train-validation sharing only warns)
    assert prepare_dataset("ds", local_spec(_overlap_dir(tmp_path / "clean", shared=0)),
                           split_overlap_mode="error")[1]["split_overlap"]["train_test"] == 0


def test_a_train_class_absent_from_test_is_a_warning_naming_it(tmp_path, caplog):
    from pifi.data import prepare_dataset

    directory = tmp_path / "ds"
    write_split(directory, "train", rows(60, classes=3))
    write_split(directory, "test", [r for r in rows(30, classes=3, offset=1000) if r["label"] != 2])
    with caplog.at_level(logging.WARNING, logger="pifi.data"):
        splits, checks = prepare_dataset("ds", local_spec(directory))
    assert checks["absent_classes"] == {"validation": [], "test": [2]}
    assert "train class(es) [2] absent from test" in caplog.text
    assert sorted(splits["test"]["label"].unique()) == [0, 1]


def test_overlap_line_names_counts_splits_and_setting():
    overlap = {"mode": "warn", "train_validation": 2, "train_test": 6, "validation_test": 0, "test_rows_dropped": 0}
    assert overlap_line("ds", overlap, test_rows=30) == (
        "PiFi data ds: texts shared between splits: 6 test row(s) also in train, 2 validation row(s) also in train "
        "(30 test rows kept; split_overlap: warn; datasets.ds.split_overlap: drop_test drops them)")
    clean = {"mode": "warn", "train_validation": 0, "train_test": 0, "validation_test": 0, "test_rows_dropped": 0}
    assert overlap_line("ds", clean, test_rows=30) is None


def test_a_datasets_own_settings_override_data_for_it_alone():
    data = {"validation_fraction": 0.2, "seed": 2023, "drop_blank_texts": False, "split_overlap": "warn"}
    mine = {"source": "local", "path": "x", "drop_blank_texts": True, "split_overlap": "drop_test"}
    assert dataset_settings(data, mine) == {**data, "drop_blank_texts": True, "split_overlap": "drop_test"}
    assert dataset_settings(data, {"source": "local", "path": "y"}) == data
    assert data["drop_blank_texts"] is False  # data.* itself is not changed
