"""The dataset loader: aggregation and order on good files, file+line reports on bad ones."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from app.config import DEFAULT_EVENT_WEIGHTS
from app.events import event_weight
from app.offline.dataset import (
    DataError,
    IdMap,
    build_histories,
    interactions_file,
    load_dataset,
    load_test,
    read_interactions,
    read_items,
    read_social,
)

INTERACTIONS_HEADER = "user_id,item_id,event,value,timestamp"
SOCIAL_HEADER = "user_id,friend_id,weight"
ITEMS_HEADER = "item_id,title,category,tags"
W = DEFAULT_EVENT_WEIGHTS


def write(folder: Path, name: str, header: str, rows: list[str]) -> Path:
    path = folder / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def good_rows(n: int) -> list[str]:
    return [f"u{k % 7},i{k % 11},view,,{1_700_000_000 + k}" for k in range(n)]


def history_ids(ds, user: str) -> list[tuple[str, float]]:
    return [(ds.items.ids[i], w) for i, w in ds.histories[ds.users.index[user]]]


def friend_ids(ds, user: str) -> dict[str, float]:
    return {ds.users.ids[f]: w for f, w in ds.friends[ds.users.index[user]]}


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    write(tmp_path, "interactions.csv", INTERACTIONS_HEADER, [
        "alice,book,view,,100",
        "alice,lamp,purchase,,300",
        "alice,book,click,,200",
        "bob,lamp,rate,5,150",
        "bob,book,view,,",
        "carol,mug,cart,,50",
    ])
    write(tmp_path, "social.csv", SOCIAL_HEADER, [
        "alice,bob,0.5", "bob,alice,0.5", "alice,dave,", "carol,carol,1",
    ])
    write(tmp_path, "items.csv", ITEMS_HEADER, [
        "book,The Hobbit,books,fantasy;classic", "lamp,Desk Lamp,,", "ghost,,,",
    ])
    return tmp_path


# ---------------------------------------------------------------- good data


def test_tiny_dataset_aggregates_per_user_item_most_recent_first(tiny: Path) -> None:
    ds = load_dataset(tiny, W)
    assert history_ids(ds, "alice") == [("lamp", W["purchase"]), ("book", W["view"] + W["click"])]
    assert history_ids(ds, "bob") == [("lamp", event_weight("rate", 5.0, W)), ("book", W["view"])]
    assert history_ids(ds, "carol") == [("mug", W["cart"])]
    assert history_ids(ds, "dave") == []  # only in social.csv: friends, no history


def test_friends_are_directed_default_weight_one_and_no_self_loops(tiny: Path) -> None:
    ds = load_dataset(tiny, W)
    assert friend_ids(ds, "alice") == {"bob": 0.5, "dave": 1.0}
    assert friend_ids(ds, "bob") == {"alice": 0.5}
    assert friend_ids(ds, "dave") == {}  # the edge alice→dave is not mirrored
    assert friend_ids(ds, "carol") == {}
    assert ds.n_users == 4


def test_friends_are_listed_strongest_tie_first_as_the_service_caps_them(
        tmp_path: Path) -> None:
    write(tmp_path, "interactions.csv", INTERACTIONS_HEADER, ["u,i,view,,1"])
    write(tmp_path, "social.csv", SOCIAL_HEADER,
          ["u,weak,0.5", "u,strong,3", "u,mid_b,1", "u,Mid_c,1", "u,mid_a,1"])
    ds = load_dataset(tmp_path, W)
    order = [ds.users.ids[f] for f, _ in ds.friends[ds.users.index["u"]]]
    assert order == ["strong", "Mid_c", "mid_a", "mid_b", "weak"], "equal ties by id bytes"


def test_item_metadata_is_read_and_catalogue_items_are_indexed(tiny: Path) -> None:
    ds = load_dataset(tiny, W)
    book = ds.item_meta[ds.items.index["book"]]
    assert (book.title, book.category, book.tags) == ("The Hobbit", "books", ("fantasy", "classic"))
    lamp = ds.item_meta[ds.items.index["lamp"]]
    assert (lamp.title, lamp.category, lamp.tags) == ("Desk Lamp", "", ())
    assert "ghost" in ds.items.index  # in the catalogue although nobody touched it
    assert ds.n_items == 4


def test_without_timestamps_later_rows_are_newer(tmp_path: Path) -> None:
    write(tmp_path, "interactions.csv", INTERACTIONS_HEADER, [
        "u1,a,view,,", "u1,b,view,,", "u1,c,view,,", "u1,a,click,,",
    ])
    ds = load_dataset(tmp_path, W)
    assert [i for i, _ in history_ids(ds, "u1")] == ["a", "c", "b"]


def test_order_follows_timestamps_not_file_order(tmp_path: Path) -> None:
    write(tmp_path, "interactions.csv", INTERACTIONS_HEADER, [
        "u1,new,view,,900", "u1,old,view,,100", "u1,mid,view,,500",
    ])
    ds = load_dataset(tmp_path, W)
    assert [i for i, _ in history_ids(ds, "u1")] == ["new", "mid", "old"]


def test_build_histories_sums_weights_and_unknown_events_weigh_one(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", INTERACTIONS_HEADER, ["u,i,listen,3,", "u,i,wishlist,,"])
    users, items = IdMap(), IdMap()
    histories = build_histories(read_interactions(path), users, items, W)
    assert histories == [[(0, event_weight("listen", 3.0, W) + 1.0)]]
    assert (users.ids, items.ids) == (["u"], ["i"])


def test_train_csv_is_preferred_and_test_csv_is_never_read(tmp_path: Path) -> None:
    write(tmp_path, "interactions.csv", INTERACTIONS_HEADER, ["full,x,view,,1"])
    write(tmp_path, "train.csv", INTERACTIONS_HEADER, ["u1,a,view,,1", "u2,b,view,,2"])
    (tmp_path / "test.csv").write_text("this is not,even a\nvalid file\x00\n", encoding="utf-8")
    assert interactions_file(tmp_path) == tmp_path / "train.csv"
    ds = load_dataset(tmp_path, W)
    assert sorted(ds.users.ids) == ["u1", "u2"]
    assert sorted(ds.items.ids) == ["a", "b"]


def test_load_test_maps_known_users_and_marks_unknown_items(tmp_path: Path) -> None:
    write(tmp_path, "train.csv", INTERACTIONS_HEADER, ["u1,a,view,,1", "u2,b,view,,2"])
    write(tmp_path, "test.csv", INTERACTIONS_HEADER, ["u1,b,view,,3", "u1,zz,view,,4",
                                                       "stranger,a,view,,5"])
    ds = load_dataset(tmp_path, W)
    test = load_test(tmp_path, ds)
    u1 = ds.users.index["u1"]
    assert set(test) == {u1}
    assert ds.items.index["b"] in test[u1]
    assert any(i < 0 for i in test[u1])  # the unseen item counts but can never be hit


def test_missing_interactions_file_is_a_data_error(tmp_path: Path) -> None:
    write(tmp_path, "social.csv", SOCIAL_HEADER, ["a,b,1"])
    with pytest.raises(DataError, match=r"interactions\.csv"):
        load_dataset(tmp_path, W)


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    write(tmp_path, "interactions.csv", "user_id,item_id,event", ["u1,a,view"])
    write(tmp_path, "social.csv", "user_id,friend_id", ["u1,u2"])
    ds = load_dataset(tmp_path, W)
    assert history_ids(ds, "u1") == [("a", W["view"])]
    assert friend_ids(ds, "u1") == {"u2": 1.0}


def test_byte_order_mark_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "interactions.csv"
    path.write_text("\ufeff" + INTERACTIONS_HEADER + "\nu1,a,view,,1\n", encoding="utf-8")
    assert [r.user_id for r in read_interactions(path)] == ["u1"]


def test_quoted_fields_with_commas_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", ITEMS_HEADER, ['i1,"Pots, Pans & Lids",kitchen,a;b'])
    assert read_items(path)["i1"].title == "Pots, Pans & Lids"


# ---------------------------------------------------------------- bad data


@pytest.mark.parametrize(
    ("name", "header", "bad_row", "message"),
    [
        ("interactions.csv", INTERACTIONS_HEADER, "u1,i1,rate,five,10",
         "value 'five' is not a number"),
        ("interactions.csv", INTERACTIONS_HEADER, "u1,i1,view,,yesterday", "timestamp"),
        ("interactions.csv", INTERACTIONS_HEADER, "u1,i1,rate,nan,10", "not a finite number"),
        ("interactions.csv", INTERACTIONS_HEADER, "user one,i1,view,,10", "user_id 'user one'"),
        ("interactions.csv", INTERACTIONS_HEADER, "u1,it/em,view,,10", "item_id 'it/em'"),
        ("interactions.csv", INTERACTIONS_HEADER, "u1,,view,,10", "item_id ''"),
        ("interactions.csv", INTERACTIONS_HEADER, f"{'u' * 129},i1,view,,10", "user_id 'uuu"),
        ("interactions.csv", INTERACTIONS_HEADER, "u1,i1,,,10", "event is empty"),
        ("interactions.csv", INTERACTIONS_HEADER, "u1,i1,   ,,10", "event is empty"),
        ("interactions.csv", INTERACTIONS_HEADER, "u1,i1", "expected 5 fields"),
        ("interactions.csv", INTERACTIONS_HEADER, "u1,i1,view,,10,extra", "expected 5 fields"),
        ("social.csv", SOCIAL_HEADER, "u1,u2,0", "weight 0.0 must be positive"),
        ("social.csv", SOCIAL_HEADER, "u1,u2,-0.5", "weight -0.5 must be positive"),
        ("social.csv", SOCIAL_HEADER, "u1,u2,strong", "weight 'strong' is not a number"),
        ("social.csv", SOCIAL_HEADER, "u1,u 2,1", "friend_id 'u 2'"),
        ("items.csv", ITEMS_HEADER, "bad id,Title,cat,", "item_id 'bad id'"),
    ],
)
def test_a_bad_row_in_a_small_file_rejects_it_naming_file_and_line(
    tmp_path: Path, name: str, header: str, bad_row: str, message: str
) -> None:
    good = {"interactions.csv": "u1,i1,view,,1", "social.csv": "u1,u2,1",
            "items.csv": "i1,Title,cat,"}[name]
    write(tmp_path, name, header, [good, good, bad_row])
    reader = {"interactions.csv": read_interactions, "social.csv": read_social,
              "items.csv": read_items}[name]
    with pytest.raises(DataError) as info:
        reader(tmp_path / name)
    text = str(info.value)
    assert f"{tmp_path / name}:4: " in text  # header is line 1, the bad row is line 4
    assert message in text


def test_id_of_exactly_128_characters_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "interactions.csv", INTERACTIONS_HEADER, [f"{'u' * 128},i1,view,,1"])
    assert read_interactions(path)[0].user_id == "u" * 128


def test_id_with_trailing_newline_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "interactions.csv", INTERACTIONS_HEADER, ['"u1\n",i1,view,,1'])
    with pytest.raises(DataError, match=r"user_id 'u1\\n'"):
        read_interactions(path)


@pytest.mark.parametrize(
    ("name", "header", "reader"),
    [
        ("interactions.csv", "user,item,event,value,timestamp", read_interactions),
        ("interactions.csv", "user_id;item_id;event;value;timestamp", read_interactions),
        ("social.csv", "user_id,friend,weight", read_social),
        ("items.csv", "id,title,category,tags", read_items),
    ],
)
def test_wrong_header_is_rejected_at_line_one(tmp_path: Path, name: str, header: str,
                                              reader) -> None:
    write(tmp_path, name, header, ["a,b,c,d,e"] * 20)
    with pytest.raises(DataError, match=re.escape(name) + r":1: header .* lacks column"):
        reader(tmp_path / name)


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "social.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"social\.csv:1: header"):
        read_social(path)


def test_header_only_file_is_empty_not_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "social.csv", SOCIAL_HEADER, [])
    assert read_social(path) == []


def test_mostly_bad_file_is_rejected_listing_lines(tmp_path: Path) -> None:
    rows = good_rows(10) + [f"u{k},i{k},rate,bad,{k}" for k in range(10)]
    write(tmp_path, "interactions.csv", INTERACTIONS_HEADER, rows)
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path, W)
    text = str(info.value)
    assert "10 of 20 rows are bad" in text
    assert f"{tmp_path / 'interactions.csv'}:12: value 'bad'" in text


def test_bad_social_file_rejects_the_whole_load(tmp_path: Path) -> None:
    write(tmp_path, "interactions.csv", INTERACTIONS_HEADER, good_rows(5))
    write(tmp_path, "social.csv", SOCIAL_HEADER, ["u1,u2,0", "u2,u1,-1"])
    with pytest.raises(DataError, match=r"social\.csv"):
        load_dataset(tmp_path, W)


def test_single_bad_row_among_many_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = good_rows(40)
    rows.insert(20, "u3,i3,view,,not-a-time")
    write(tmp_path, "interactions.csv", INTERACTIONS_HEADER, rows)
    with caplog.at_level(logging.WARNING, logger="app.offline.dataset"):
        ds = load_dataset(tmp_path, W)
    assert sum(len(h) for h in ds.histories) == len({(k % 7, k % 11) for k in range(40)})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"{tmp_path / 'interactions.csv'}:22:" in warnings[0]
    assert "not-a-time" in warnings[0]
    assert len(read_interactions(tmp_path / "interactions.csv")) == 40


def test_non_utf8_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_bytes(ITEMS_HEADER.encode() + b"\ni1,ok,cat,\ni2,Caf\xe9,cat,\n")
    with pytest.raises(DataError, match=r"items\.csv:3: not UTF-8"):
        read_items(path)


def test_oversized_field_is_a_data_error(tmp_path: Path) -> None:
    path = write(tmp_path, "items.csv", ITEMS_HEADER, [f"i1,{'x' * 200_000},cat,"])
    with pytest.raises(DataError, match=r"items\.csv:\d+: unreadable CSV"):
        read_items(path)
