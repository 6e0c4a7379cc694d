"""Data sets by name (`--data nations`) and from a CSV file: found locally, else downloaded and
checked against a pinned SHA-256 -- here from an HTTP server on the loopback address -- and,
offline, one line saying which files to put where."""
from __future__ import annotations

import hashlib
import http.server
import threading

import numpy as np
import pytest

from jaxdl.cli import main as cli_main
from jaxdl.data import named
from jaxdl.data.classification import load_csv
from jaxdl.errors import JaxdlError

TRIPLES = {"train.txt": "a\tr\tb\nb\tr\tc\nc\ts\ta\n", "valid.txt": "a\ts\tc\n", "test.txt": "b\tr\ta\n"}


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1, counting the requests."""
    www = tmp_path / "www"
    www.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kw):
            super().__init__(*args, directory=str(www), **kw)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}/", requests
    httpd.shutdown()


def _publish(www, digests=None):
    for name, text in TRIPLES.items():
        (www / name).write_text(text)
    return digests or {n: hashlib.sha256(t.encode()).hexdigest() for n, t in TRIPLES.items()}


def test_a_named_graph_is_downloaded_once_checked_and_then_found(server, tmp_path, monkeypatch):
    www, url, requests = server
    monkeypatch.setenv("JAXDL_DATA", str(tmp_path / "cache"))
    monkeypatch.setitem(named.KG_SETS, "tiny", (url, _publish(www)))
    folder = named.graph_folder("tiny")
    assert folder == tmp_path / "cache" / "kg" / "tiny" and sorted(requests) == ["/test.txt", "/train.txt",
                                                                                 "/valid.txt"]
    assert (folder / "train.txt").read_text() == TRIPLES["train.txt"]
    assert named.graph_folder("tiny") == folder and len(requests) == 3  # the second time: from the cache


def test_a_download_that_does_not_match_its_digest_is_refused(server, tmp_path, monkeypatch):
    www, url, _ = server
    monkeypatch.setenv("JAXDL_DATA", str(tmp_path / "cache"))
    monkeypatch.setitem(named.KG_SETS, "tiny", (url, _publish(www, {n: "0" * 64 for n in TRIPLES})))
    with pytest.raises(JaxdlError, match="does not match its pinned SHA-256"):
        named.graph_folder("tiny")


def test_offline_says_which_files_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_DATA", str(tmp_path / "cache"))
    monkeypatch.setitem(named.KG_SETS, "tiny", ("http://127.0.0.1:9/", {n: "0" * 64 for n in TRIPLES}))
    with pytest.raises(JaxdlError) as e:
        named.graph_folder("tiny")
    assert "could not download it" in str(e.value) and str(tmp_path / "cache" / "kg" / "tiny") in str(e.value)
    with pytest.raises(JaxdlError, match="not found locally and not downloadable here"):
        named.graph_folder("fb15k237")


def test_a_named_graph_from_data_dir_trains(tmp_path, capsys):
    graph = tmp_path / "data" / "tiny"
    graph.mkdir(parents=True)
    for name, text in TRIPLES.items():
        (graph / name).write_text(text)
    named.KG_SETS.setdefault("tiny", (None, {}))
    try:
        assert cli_main(["exp", "transe", "--data", "tiny", "--data-dir", str(tmp_path / "data"), "--max-epochs", "2",
                         "--batch-size", "2", "--eval-every", "1", "--dim", "4", "--no-progress",
                         "--out", str(tmp_path / "r")]) == 0
    finally:
        named.KG_SETS.pop("tiny", None)
    assert "3 entities, 2 relations" in capsys.readouterr().out


def test_every_pinned_graph_names_three_sha256s():
    for name, (url, digests) in named.KG_SETS.items():
        if url is not None:
            assert url.startswith("https://") and sorted(digests) == sorted(named.SPLIT_FILES), name
            assert all(len(d) == 64 and int(d, 16) >= 0 for d in digests.values()), name


def test_a_csv_classification_set(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    label = np.where(X[:, 0] + X[:, 2] > 0, "pos", "neg")
    lines = ["x1,x2,label,x3"] + [f"{a:.4f},{b:.4f},{t},{c:.4f}" for (a, b, c), t in zip(X, label)]
    path = tmp_path / "my.csv"
    path.write_text("\n".join(lines) + "\n")
    data = load_csv(path, target="label")
    assert data.num_classes == 2 and data.feature_names == ("x1", "x2", "x3") and data.num_features == 3
    assert len(data.y_train) + len(data.y_test) == 200
    np.testing.assert_allclose(data.X_train.mean(0), 0, atol=1e-5)  # standardised with the training split
    assert cli_main(["exp", "softmax", "--dataset", str(path), "--target", "label", "--max-epochs", "20",
                     "--no-progress", "--out", str(tmp_path / "r")]) == 0
    assert float(capsys.readouterr().out.split("test accuracy ")[1].split()[0]) > 0.85
    (tmp_path / "bad.csv").write_text("a,label\n1,x\nfoo,y\n")
    with pytest.raises(JaxdlError, match=r"bad.csv:3: a feature that is not a number"):
        load_csv(tmp_path / "bad.csv", target="label")
    with pytest.raises(JaxdlError, match="no column 'y'"):
        load_csv(path, target="y")
