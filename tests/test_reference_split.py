"""The FedE reference split format: hand-built reference pickles (numpy 2 and numpy 1.x made)
read with ids kept, a synthetic split exported and read back, hostile pickles refused before
anything runs, and every malformed file refused in one line."""
import base64
import dataclasses
import gzip
import os
import pickle
import pickletools
import zlib

import numpy as np
import pytest

from jaxdl.data.federated import check_split, graph_triples, split_by_relation
from jaxdl.data.kg import SPLITS, synthetic_kg
from jaxdl.data.reference_split import (load_reference_split, pickle_globals, reference_split_bytes,
                                        save_reference_split)
from jaxdl.errors import JaxdlError

# Global triples (h, r, t) per client and split (the reference's key order: train, test,
# valid), with each client's local numbering of entities and relations (global -> local),
# deliberately not in global order.
CLIENTS = [
    ({"train": [(0, 2, 1), (1, 0, 2), (2, 2, 3), (3, 0, 0)], "test": [(1, 0, 3)], "valid": [(0, 2, 2)]},
     {3: 0, 1: 1, 0: 2, 2: 3}, {2: 0, 0: 1}),
    ({"train": [(3, 1, 4), (4, 1, 5), (5, 1, 3)], "test": [], "valid": [(3, 1, 5)]},
     {4: 0, 3: 1, 5: 2}, {1: 0}),
]

# The same clients pickled by numpy 1.26.4 (protocols 2 and 4), zlib-compressed, base64.
NUMPY1_PROTOCOL2 = (
    "eNp1VfmD00QUTo/FJQoioCBeeID1YAUVREVd8Ka66vOKAsYmjSSym+7XnSBVK3i0y3rfFyp43yJ4AcrhweWt/5DO26TTodvOD00n"
    "me9438xL1qVXwMhVkcpZXYZhiHIhCJGuIpOzTDn3iis9OwiL3hpk3TAaGKz0uKWy1zMQ9YugUC4XKqZd9txSOCTKkStMdMWrzLAY"
    "P8W4vFHDYa7tloqeO2R6If8x0W2lJL2D8dY4ee0viCCcB7OOwwlHDGMCYWIun8qn89k6jkwoi6IyKJGTrLREBAtx1Mj6YUwmTMnl"
    "M6NsizC1r69v6X9yjP7kDYGjnRG/2+qVTxnFI5VcM8aho9P9Bg7H+NLfNMJ0gWMda3wjHXaFGX6XP1rpcb60fzzhBLafreFEfwob"
    "mNlGqHWOk1hgJuFkgVMca+Ih8dulcoBTGyqnscoswmwV0umxTm8b3nRLYZ3uNwZy7OMMwpkCZznWBL3QURtnN2zMYRs9hHOSYuc2"
    "i013SFGJzGORcwnnCZzvRFaWD583JDC/igU5P9uQuIAlFhIujCtN1XFRLDKpTZK4mEkXES4RuNTx1aZcxiS9hMVMkqphSUzRrYd/"
    "OUOvIFwpcJXjq6SvZug1hGuV/tKx+o0EkWeS6wjXC/Q5vsrpBia5kXBTok9NfWX9ZobeQrhV4DaZBzfj6kJ/UMTtVVhaIHcw152E"
    "ZcrQ8qah1i3FCma9i2AL3K0FUmASh+AmhoptDHkMvYewUsDXAgkYei9hldLvb+qP6ZkBJgkJJYFBLRAwSZkwlOiLpr6CRgxdTbhP"
    "YI0TRVVUcr58Md2vZfEA0zxIqMZeMnU8FBPNbXM4Op1IdQLWsuA6wsMCj2hZPcoijxFqLJKpoR5LTDc6Dwwz1XrCiMDjWnZPMNWT"
    "hKeU36ebfht7lk2uXR3mam+fYZFnCc8JPK9l+wKLvEh4KfH7ctNvqqVkVforTPUq4TWB153Ilz24QYv5DWZ8k/BWbNuoY6PkdG3b"
    "iQL5GQht23QqsnlNbJJvjbcF3tHie5fB7xHeZ7Ccf8B25JoPtVw+4jUfEz5RAp8mqz7TCvucV31B2JwwfZms2SIdyybZqjn+ipd+"
    "TfhGHdJvx3atOmnfcfXbCNsFdmjOv2eSHwg7k0O6q02T7GboHsKPAj9pBf3M0F8Ie5X+vqZ+pmVDsZ9JDhAOCvyq1fsbk/xO+CPR"
    "/7PNW+svhv5N+EfgX9kkXs//BTbg/Q=="
)
NUMPY1_PROTOCOL4 = (
    "eNqtkz1PwzAQhm0nUUtVEANIdOvWThEjA0OlLohIHdhRlTYWjtSmVWojOiDBwEclbz3+GH8IkriBNNhNB26IY+fuvefOlyf749NB"
    "md1C9xG60uGxH0aQvjZocEeHYRTQB5CnkZjOl+54FlN3KiY89OPYX4JsDmM6nkULHosxhzVIJ3MEWYsC5bIGD71AH4/gDW6g62GP"
    "ePYrsLp0Ar6c0zSIhBewelffLYkvYTAYXH8llj08xGG06veIIkV4s1po20zneRwkMvIgqypLzGqskbKxZk5mJ5uTVb9dVizvM6Wj"
    "3/4MZ3GokVOFJoK9sgApoZrOUTHh4Q+6IV+OTwwNKKoJaXO64OlNM1uHjhX6MdYEs9bfCKyS14s9Yu19lK1iRMesvI3v3PuTMKjm"
    "J7osrf2y7ObXzdcu/qKfECk4MdJbKsc5rrhKoplMXXWWYjhDBjNXm5Pk/bM3q2PYV91mToJL5MUKBHONnUGKx1gpyvTZs7EgJaAc"
    "OjvjBbva+/cg/z5eVqmxVeO11UBB3W9dK2Am"
)


def reference_part(triples, ent, rel, dtype=np.int64) -> dict:
    """One split of one client, as the reference stores it."""
    g = np.array(triples, np.int64).reshape(-1, 3)
    return {"edge_index": np.array([[ent[h] for h in g[:, 0]], [ent[t] for t in g[:, 2]]], dtype).reshape(2, -1),
            "edge_type": np.array([rel[r] for r in g[:, 1]], dtype),
            "edge_index_ori": np.ascontiguousarray(g[:, [0, 2]].T).astype(dtype),
            "edge_type_ori": g[:, 1].astype(dtype)}


def reference_data(clients=CLIENTS, dtype=np.int64) -> list:
    return [{s: reference_part(t[s], ent, rel, dtype) for s in ("train", "test", "valid")}
            for t, ent, rel in clients]


def write(tmp_path, data, protocol=4, name="split.pkl"):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else pickle.dumps(data, protocol=protocol))
    return path


def refused(path) -> str:
    """The one-line message load_reference_split refuses `path` with."""
    with pytest.raises(JaxdlError) as e:
        load_reference_split(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"--split {path}: "), msg
    return msg


def check_hand_built(kg, split):
    """kg/split read from CLIENTS: global ids kept, relations renumbered to jaxdl's local ids."""
    assert (kg.num_entities, kg.num_relations, split.num_clients) == (6, 3, 2)
    assert [int(e) for e in kg.entities] == list(range(6)) and list(kg.entities) == sorted(kg.entities)
    assert [int(r) for r in kg.relations] == list(range(3))
    for c, (triples, _, _) in zip(split.clients, CLIENTS):
        np.testing.assert_array_equal(c.relations, sorted({r for t in triples["train"] for r in [t[1]]}))
        for s in SPLITS:  # file row order kept; local relation id = position among sorted global ids
            np.testing.assert_array_equal(c.to_global(c.split(s)), np.array(triples[s], np.int32).reshape(-1, 3))
            assert c.split(s).dtype == np.int32
    np.testing.assert_array_equal(split.clients[0].train[:, 1], [1, 0, 1, 0])
    for s in SPLITS:
        expected = np.concatenate([np.array(t[s], np.int32).reshape(-1, 3) for t, _, _ in CLIENTS])
        np.testing.assert_array_equal(kg.split(s), expected)
    assert (split.seed, split.moved_to_train) == (-1, (0, 0))
    assert split.valid_fraction == pytest.approx(2 / 10) and split.test_fraction == pytest.approx(1 / 10)
    check_split(split, kg)


# ---------------------------------------------------------------------------------------
# Reading reference pickles
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_hand_built_pickle_read_with_ids_kept(tmp_path, protocol):
    path = write(tmp_path, reference_data(), protocol)
    kg, split = load_reference_split(path)
    check_hand_built(kg, split)
    assert kg.source == str(path)


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.int8])
def test_any_integer_dtype_read(tmp_path, dtype):
    check_hand_built(*load_reference_split(write(tmp_path, reference_data(dtype=dtype))))


@pytest.mark.parametrize("encoded", [NUMPY1_PROTOCOL2, NUMPY1_PROTOCOL4])
def test_numpy1_pickles_read(tmp_path, encoded):
    data = zlib.decompress(base64.b64decode(encoded))
    assert b"numpy.core.multiarray" in data and b"numpy._core" not in data
    check_hand_built(*load_reference_split(write(tmp_path, data)))


def test_gzipped_pickle_read(tmp_path):
    check_hand_built(*load_reference_split(write(tmp_path, gzip.compress(pickle.dumps(reference_data())))))


# ---------------------------------------------------------------------------------------
# Writing, and the round trip
# ---------------------------------------------------------------------------------------
def test_round_trip_synthetic(tmp_path):
    kg0 = synthetic_kg(seed=0)
    split = split_by_relation(kg0, 3)
    path = save_reference_split(tmp_path / "out" / "fed3.pkl", split)
    kg, back = load_reference_split(path)
    assert (kg.num_entities, kg.num_relations) == (kg0.num_entities, kg0.num_relations)
    np.testing.assert_array_equal(graph_triples(kg), graph_triples(kg0))  # entity i is entity i
    assert back.num_clients == split.num_clients
    for a, b in zip(split.clients, back.clients):
        np.testing.assert_array_equal(a.relations, b.relations)
        for s in SPLITS:
            assert set(map(tuple, a.split(s).tolist())) == set(map(tuple, b.split(s).tolist()))
    assert reference_split_bytes(back) == path.read_bytes()  # deterministic, and a fixed point


def test_export_layout(tmp_path):
    split = split_by_relation(synthetic_kg(seed=0), 3)
    data = pickle.loads(reference_split_bytes(split))  # as the reference reads it
    assert isinstance(data, list) and len(data) == 3
    for c, d in zip(split.clients, data):
        assert list(d) == ["train", "valid", "test"]
        for s in SPLITS:
            part = d[s]
            assert list(part) == ["edge_index", "edge_type", "edge_index_ori", "edge_type_ori"]
            assert all(type(a) is np.ndarray and a.dtype == np.int64 for a in part.values())
            t = c.split(s)
            np.testing.assert_array_equal(part["edge_index_ori"], t[:, [0, 2]].T)
            np.testing.assert_array_equal(part["edge_type"], t[:, 1])
            np.testing.assert_array_equal(part["edge_type_ori"], c.relations[t[:, 1]])
        # local entities: first appearance over train (head, tail, row by row)
        order = list(dict.fromkeys(c.train[:, [0, 2]].ravel().tolist()))
        np.testing.assert_array_equal(d["train"]["edge_index"][0], [order.index(h) for h in c.train[:, 0]])
        np.testing.assert_array_equal(d["train"]["edge_index"][1], [order.index(t) for t in c.train[:, 2]])


def test_export_names_only_numpy1_globals():
    data = reference_split_bytes(split_by_relation(synthetic_kg(seed=0), 3))
    ops = list(pickletools.genops(data))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 3
    named = {arg for op, arg, _ in ops if op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ")}
    assert named == set(pickle_globals(data)) == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert b"numpy._core" not in data


def test_export_refuses_entity_in_no_train_split():
    split = split_by_relation(synthetic_kg(seed=0), 3)
    with pytest.raises(JaxdlError, match="entity 100 .* occurs in no client's train split") as e:
        reference_split_bytes(dataclasses.replace(split, num_entities=split.num_entities + 1))
    assert "\n" not in str(e.value)


def test_export_refuses_held_out_entity_unseen_in_train(tmp_path):
    _, split = load_reference_split(write(tmp_path, reference_data()))
    c1 = split.clients[1]
    valid = c1.valid.copy()
    valid[0, 0] = 0  # client 1 trains on entities 3, 4, 5 only
    bad = dataclasses.replace(split, clients=(split.clients[0], dataclasses.replace(c1, valid=valid)))
    with pytest.raises(JaxdlError, match="client 1 valid: entity 0 does not occur in its train") as e:
        reference_split_bytes(bad)
    assert "\n" not in str(e.value)


def test_save_replaces_a_link_not_its_target(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("keep")
    link = tmp_path / "split.pkl"
    link.symlink_to(target)
    save_reference_split(link, split_by_relation(synthetic_kg(seed=0), 3))
    assert target.read_text() == "keep" and not link.is_symlink()
    load_reference_split(link)


# ---------------------------------------------------------------------------------------
# Hostile and malformed files
# ---------------------------------------------------------------------------------------
class CallsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class OpensFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("payload, name", [(CallsSystem, "system"), (OpensFile, "open")])
def test_malicious_pickle_refused_before_running(tmp_path, protocol, payload, name):
    marker = tmp_path / "marker"
    data = reference_data()
    data[0]["train"]["edge_type"] = payload(marker)
    msg = refused(write(tmp_path, data, protocol))
    assert "refuses to load: the pickle calls " in msg and f".{name} " in msg
    assert "only lists, dicts and numpy integer arrays are read" in msg
    assert not marker.exists()


def test_hand_written_global_refused(tmp_path):
    marker = tmp_path / "marker"
    data = b"c__builtin__\neval\n(V__import__('pathlib').Path(" + repr(str(marker)).encode() + b").touch()\ntR."
    msg = refused(write(tmp_path, data))
    assert "the pickle calls __builtin__.eval " in msg
    assert not marker.exists()


def test_codecs_encode_narrowed_to_latin1(tmp_path):
    data = b"c_codecs\nencode\n(Vx\nVrot13\ntR."
    assert "not a readable pickle" in refused(write(tmp_path, data))


def test_object_array_refused(tmp_path):
    data = reference_data()
    data[1]["valid"]["edge_type"] = np.array([0], dtype=object)
    assert "client 1 valid edge_type has dtype object, expected integers" in refused(write(tmp_path, data))


def test_float_array_refused(tmp_path):
    data = reference_data()
    data[0]["train"]["edge_index"] = data[0]["train"]["edge_index"].astype(np.float64)
    assert "client 0 train edge_index has dtype float64, expected integers" in refused(write(tmp_path, data))


def test_empty_float_array_read(tmp_path):
    data = reference_data()  # client 1 has no test triples; np.array([[], []]) is float64
    data[1]["test"] = {"edge_index": np.array([[], []]), "edge_type": np.array([]),
                       "edge_index_ori": np.array([[], []]), "edge_type_ori": np.array([])}
    check_hand_built(*load_reference_split(write(tmp_path, data)))


@pytest.mark.parametrize("cut", [0, 1, 10, 0.5, -1])
def test_truncated_bytes_refused(tmp_path, cut):
    data = pickle.dumps(reference_data(), protocol=4)
    data = data[: int(cut * len(data)) if isinstance(cut, float) else cut]
    assert "not a readable pickle" in refused(write(tmp_path, data))


def test_garbage_and_missing_files_refused(tmp_path):
    assert "not a readable pickle" in refused(write(tmp_path, b"head\trel\ttail\n"))
    with pytest.raises(JaxdlError, match="no such file"):
        load_reference_split(tmp_path / "absent.pkl")


def test_huge_file_refused(tmp_path, monkeypatch):
    path = write(tmp_path, reference_data())
    monkeypatch.setenv("JAXDL_READ_LIMIT", "100")
    with pytest.raises(JaxdlError, match="larger than"):
        load_reference_split(path)


def _set(client, split, key, value):
    def edit(data):
        data[client][split][key] = value(data[client][split][key]) if callable(value) else value
    return edit


def _drop(client, split=None, key=None):
    def edit(data):
        if key is not None:
            del data[client][split][key]
        else:
            del data[client][split]
    return edit


def _rename_entity(old, new, clients=(0, 1)):
    def edit(data):
        for c in (data[i] for i in clients):
            for part in c.values():
                part["edge_index_ori"] = np.where(part["edge_index_ori"] == old, new, part["edge_index_ori"])
    return edit


def _add_row(client, split, local, glob):
    """Append one triple, given as local (h, r, t) and global (h, r, t)."""
    def edit(data):
        part = data[client][split]
        part["edge_index"] = np.concatenate([part["edge_index"], [[local[0]], [local[2]]]], 1)
        part["edge_type"] = np.append(part["edge_type"], local[1])
        part["edge_index_ori"] = np.concatenate([part["edge_index_ori"], [[glob[0]], [glob[2]]]], 1)
        part["edge_type_ori"] = np.append(part["edge_type_ori"], glob[1])
    return edit


def _one_local_relation(data):
    for part in data[0].values():
        part["edge_type"] = np.zeros_like(part["edge_type"])


def _relation_gap(data):
    for part in data[1].values():
        part["edge_type_ori"] = part["edge_type_ori"] + 2  # relation 1 -> 3: relations 0, 2, 3


STRUCTURE_ERRORS = {
    "empty list": (lambda data: data.clear(), "holds an empty list"),
    "missing split": (_drop(0, "valid"), "client 0 has keys ['test', 'train'], expected train, valid, test"),
    "missing array": (_drop(1, "test", "edge_type_ori"), "client 1 test holds ['edge_index', 'edge_index_ori', "
                                                         "'edge_type'], expected a dict of"),
    "not an array": (_set(0, "train", "edge_type", lambda a: a.tolist()), "client 0 train edge_type is a list"),
    "wrong shape": (_set(0, "train", "edge_index", lambda a: np.vstack([a, a[:1]])),
                    "client 0 train edge_index has shape (3, 4), expected (2, N)"),
    "transposed": (_set(0, "train", "edge_index_ori", lambda a: a.T.copy()),
                   "client 0 train edge_index_ori has shape (4, 2), expected (2, N)"),
    "lengths differ": (_set(1, "train", "edge_type", lambda a: a[:2]), "client 1 train: arrays of different lengths"),
    "negative id": (_set(0, "test", "edge_type_ori", lambda a: a - 5), "client 0 test edge_type_ori holds id -5"),
    "huge id": (_set(0, "test", "edge_type_ori", lambda a: a + 2**40), "outside 0..2147483647"),
    "no train": (lambda data: data[1].__setitem__("train", reference_part([], {}, {})),
                 "client 1 has no training triples"),
    "local ids not 0..n-1": (_set(1, "train", "edge_index", lambda a: a + 1),
                             "client 1 train: local entity ids are not 0..2 (3 distinct, largest 3)"),
    "local id out of range": (_add_row(1, "test", (3, 0, 0), (3, 1, 4)),
                              "client 1 test: local entity id 3 is outside 0..2 (the ids of its train split)"),
    "one local, two globals": (_add_row(0, "test", (2, 0, 0), (3, 2, 3)),
                               "client 0: local entity id 2 stands for two global ids"),
    "two locals, one global": (_rename_entity(0, 3, clients=(0,)),
                               "client 0: global entity id 3 stands for two local ids"),
    "local relation twice": (_one_local_relation,
                             "client 0: local relation id 0 stands for two global ids"),
    "valid entity unseen": (_add_row(0, "valid", (0, 0, 3), (0, 2, 4)),
                            "client 0 valid: entity 4 (global id) does not occur in its train split"),
    "relation in two clients": (_add_row(1, "train", (0, 1, 1), (4, 0, 3)),
                                "relation 0 (global id) belongs to clients 0 and 1"),
    "entities not contiguous": (_rename_entity(5, 7),
                                "global entity ids are not 0..5: 2 of 0..7 (first 5) occur in no client's train"),
    "relations not contiguous": (_relation_gap, "global relation ids are not 0..2: 1 of 0..3 (first 1) occur in no "
                                                "client's train split"),
    "triple twice": (_add_row(0, "test", (2, 0, 1), (0, 2, 1)), "triple (0, 2, 1) (global ids) occurs 2 times"),
}


@pytest.mark.parametrize("case", list(STRUCTURE_ERRORS))
def test_structure_errors_refused(tmp_path, case):
    edit, expected = STRUCTURE_ERRORS[case]
    data = reference_data()
    edit(data)
    assert expected in refused(write(tmp_path, data))


@pytest.mark.parametrize("top", [{"train": {}}, ({},), 3])
def test_top_level_not_a_list_refused(tmp_path, top):
    assert "expected a list of clients" in refused(write(tmp_path, top))


def test_client_not_a_dict_refused(tmp_path):
    assert "client 0 is a list, expected a dict of train/valid/test" in refused(write(tmp_path, [[]]))
