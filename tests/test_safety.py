"""A run folder cannot be turned against its user: no write follows a symbolic link planted in
it, and `stop` signals a process only after checking that it is the run's own."""
from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess

import psutil
import pytest

from conftest import xla_flags
from jaxdl.cli import main as cli_main
from jaxdl.errors import JaxdlError
from jaxdl.runs import files, ps, registry
from jaxdl.runs.run import Run


@pytest.fixture(autouse=True)
def _registry(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_REGISTRY", str(tmp_path / "registry"))


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


@pytest.mark.parametrize("name", ["run.lock", "config.json", "metrics.jsonl", "config.json.tmp", "summary.json.tmp",
                                  "curves.png", "checkpoints"])
def test_a_planted_link_is_refused_and_its_target_untouched(tmp_path, victim, name, capsys):
    out = tmp_path / "s1"
    out.mkdir()
    (out / name).symlink_to(victim)
    code = cli_main(["exp", "linreg", "--out", str(out), "--no-progress", "--no-tensorboard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is a symbolic link" in err[0], err
    assert victim.read_text() == "precious\n"


def test_a_link_planted_in_a_resumed_run_is_refused(tmp_path, victim, capsys):
    out = tmp_path / "r"
    assert cli_main(["exp", "linreg", "--out", str(out), "--max-epochs", "1", "--no-progress"]) == 0
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").symlink_to(victim)
    assert cli_main(["exp", "linreg", "--resume", str(out), "--max-epochs", "2", "--no-progress"]) == 2
    assert "metrics.jsonl: is a symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "precious\n"


def test_whole_file_writes_replace_a_link_never_its_target_and_appends_refuse_one(tmp_path, victim):
    link = tmp_path / "summary.json"
    link.symlink_to(victim)
    files.write_json_atomic(link, {"finished": True})
    assert not link.is_symlink() and json.loads(link.read_text()) == {"finished": True}
    assert victim.read_text() == "precious\n"
    (tmp_path / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(JaxdlError, match="is a symbolic link"):
        files.append_line(tmp_path / "metrics.jsonl", "{}")
    assert victim.read_text() == "precious\n"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_registry_entries_are_the_users_alone(tmp_path):
    run = Run.open("toy", {"max_epochs": 1}, out=str(tmp_path / "r"))
    run.close()
    entries = list((tmp_path / "registry").glob("*.json"))
    assert entries and all(oct(p.stat().st_mode & 0o777) == oct(0o600) for p in entries)


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _spoofed_run(tmp_path, pid: int, **record) -> os.PathLike:
    run_dir = tmp_path / "spoof"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    info = psutil.Process(pid)
    lock = {"pid": pid, "host": socket.gethostname(), "create_time": info.create_time(), "cmdline": info.cmdline()}
    (run_dir / "run.lock").write_text(json.dumps({**lock, **record}))
    return run_dir


def test_stop_refuses_a_process_that_does_not_hold_the_runs_lock(tmp_path, sleeper):
    run_dir = _spoofed_run(tmp_path, sleeper.pid)  # its real start time and command line, but no flock
    with pytest.raises(JaxdlError, match=f"not signalling pid {sleeper.pid}: nobody holds the run's lock"):
        ps.main_stop([str(run_dir)])
    registry.register(run_dir, {"run_dir": str(run_dir), "pid": sleeper.pid, "host": socket.gethostname()})
    with pytest.raises(JaxdlError, match=f"not signalling pid {sleeper.pid}"):
        ps.main_stop([str(sleeper.pid)])  # the same through a registry entry naming the pid
    assert sleeper.poll() is None  # never signalled


@pytest.mark.parametrize("record,reason", [({"cmdline": ["python", "-m", "jaxdl", "exp", "mlp"]}, "command line"),
                                           ({"create_time": None}, "no start time")])
def test_stop_refuses_a_pid_whose_identity_does_not_match(tmp_path, sleeper, record, reason):
    run_dir = _spoofed_run(tmp_path, sleeper.pid, **record)
    with pytest.raises(JaxdlError, match=reason):
        ps.main_stop([str(run_dir)])
    assert sleeper.poll() is None


def test_a_reused_pid_counts_as_a_dead_run(tmp_path, sleeper, capsys):
    run_dir = _spoofed_run(tmp_path, sleeper.pid, create_time=12345.0)  # the run's process started at another time
    assert ps.main_stop([str(run_dir)]) == 0
    assert "not running" in capsys.readouterr().out and sleeper.poll() is None


def test_a_seed_past_32_bits_is_one_line(capsys):
    assert cli_main(["exp", "linreg", "--seed", str(2 ** 63)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --seed: must be <= {2 ** 32 - 1}, got {2 ** 63}"


def test_a_run_file_that_is_a_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli_main(["exp", "linreg", "--out", str(out), "--max-epochs", "1", "--no-progress"]) == 0
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").mkdir()
    assert cli_main(["exp", "linreg", "--resume", str(out), "--max-epochs", "2", "--no-progress"]) == 2
    assert "metrics.jsonl: is not a file" in capsys.readouterr().err
    (out / "metrics.jsonl").rmdir()
    shutil.rmtree(out / "checkpoints")
    (out / "checkpoints").write_text("not a folder")
    assert cli_main(["exp", "linreg", "--resume", str(out), "--max-epochs", "2", "--no-progress"]) == 2
    assert "checkpoints: is not a folder" in capsys.readouterr().err


def test_a_fresh_run_never_adopts_stray_checkpoints(tmp_path, capsys):
    donor = tmp_path / "donor"
    assert cli_main(["exp", "linreg", "--out", str(donor), "--max-epochs", "2", "--no-progress"]) == 0
    stray = tmp_path / "stray"
    stray.mkdir()
    (donor / "checkpoints").rename(stray / "checkpoints")
    assert cli_main(["exp", "linreg", "--out", str(stray), "--no-progress"]) == 2
    assert "holds checkpoints but no config.json" in capsys.readouterr().err


def test_a_malformed_registry_entry_breaks_no_listing(tmp_path, capsys):
    good = tmp_path / "good"
    assert cli_main(["exp", "linreg", "--out", str(good), "--max-epochs", "1", "--no-progress"]) == 0
    bad = tmp_path / "bad"
    assert cli_main(["exp", "linreg", "--out", str(bad), "--max-epochs", "1", "--no-progress"]) == 0
    entry = registry.lookup(bad)
    registry.register(bad, {**entry, "started": "yesterday", "pid": "x"})
    capsys.readouterr()
    assert cli_main(["ps", "--all"]) == 0
    out = capsys.readouterr()
    assert str(good) in out.out or good.name in out.out


def _zip_bomb(path, member: str, size: int, byte: bytes = b"a"):
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open(member, "w", force_zip64=True) as f:
            block = byte * (1 << 20)
            for _ in range(size >> 20):
                f.write(block)
    return path


def test_a_zip_bomb_corpus_is_refused_before_it_is_read(tmp_path, monkeypatch, capsys):
    bomb = _zip_bomb(tmp_path / "bomb.zip", "ptb/ptb.train.txt", 64 << 20)  # 64 MiB from ~64 KiB
    assert bomb.stat().st_size < 1 << 20
    monkeypatch.setenv("JAXDL_READ_LIMIT", str(16 << 20))
    assert cli_main(["exp", "word2vec", "--corpus", str(bomb), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "larger than 16 MiB once read" in err[0] and "JAXDL_READ_LIMIT" in err[0]


def test_a_member_that_lies_about_its_size_is_refused(tmp_path):
    """zipfile reads no more than the declared size and then checks the CRC: a member claiming
    less than it holds is refused as corrupt, never read past its claim."""
    import zipfile

    from jaxdl.data.bounded import read_zip_member

    bomb = _zip_bomb(tmp_path / "bomb.zip", "a.txt", 8 << 20)
    with zipfile.ZipFile(bomb) as z:
        z.getinfo("a.txt").file_size = 10  # as a crafted header would claim
        with pytest.raises(JaxdlError, match="bomb.zip:a.txt: corrupt zip member"):
            read_zip_member(z, "a.txt", "bomb.zip:a.txt", limit=1 << 20)


def test_nul_bytes_are_no_corpus_and_gzip_is_bounded(tmp_path, capsys):
    import gzip

    from jaxdl.data.bounded import read_file

    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"\x00" * 1000)
    assert cli_main(["exp", "word2vec", "--corpus", str(nul), "--no-progress"]) == 2
    assert "NUL bytes" in capsys.readouterr().err
    packed = tmp_path / "big.gz"
    packed.write_bytes(gzip.compress(b"0" * (4 << 20)))
    with pytest.raises(JaxdlError, match="larger than 1 MiB"):
        read_file(packed, limit=1 << 20)
    assert len(read_file(packed, limit=8 << 20)) == 4 << 20


def test_an_idx_set_without_images_is_one_line(tmp_path):
    import numpy as np

    from jaxdl.data import fashion_mnist, idx

    for name in fashion_mnist.FILES:
        shape = (0, 28, 28) if "images" in name else (0,)
        idx.write_idx(tmp_path / name, np.zeros(shape, np.uint8), compress=True)
    with pytest.raises(JaxdlError, match="holds no images"):
        fashion_mnist.load_fashion_mnist(str(tmp_path))


def test_an_unreachable_coordinator_or_a_taken_port_is_one_line(cli):
    import socket as sockets

    out = cli("launch", "--coordinator", "127.0.0.1:9", "--num-processes", "2", "--process-id", "1",
              "--init-timeout", "2", "exp", "mlp", "--max-epochs", "1")
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: launch: could not reach the coordinator 127.0.0.1:9 within 2 s (Connection refused); start process 0 "
        "first, or check HOST:PORT"]
    with sockets.create_server(("", 0)) as taken:
        port = taken.getsockname()[1]
        out = cli("launch", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "0",
                  "exp", "mlp", "--max-epochs", "1")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert f"process 0 cannot listen on port {port} (Address already in use)" in out.stderr
    # process 0 alone: its peer never starts; JAX would abort the process after its timeout
    out = cli("launch", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "3", "--process-id", "0",
              "--init-timeout", "2", "exp", "mlp", "--max-epochs", "1")
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: launch: process 0 waited 2 s for process(es) 1-2 of 3 to join; start them with the same "
        "--coordinator, or raise --init-timeout"]


@pytest.mark.parametrize("peers,refusal", [
    ([(1, 3)], "process 1 was started with --num-processes 3, process 0 with 2"),
    ([(1, 3), (2, 3)], "process 1 was started with --num-processes 3, process 0 with 3"),
    ([(1, 3), (1, 3)], "process id 1 is taken twice in a job of 3"),
    ([(5, 3)], "process id 5 is out of range in a job of 3"),
])
def test_processes_that_disagree_about_the_job_are_refused_on_both_sides(peers, refusal):
    """The handshake before JAX's runtime: every process named in the refusal gets the same
    one line; a job whose processes agree is admitted."""
    import socket as sockets
    import threading

    from jaxdl.launch import check_coordinator

    size = 2 if refusal.endswith("process 0 with 2") else 3
    with sockets.create_server(("", 0)) as probe:
        port = probe.getsockname()[1]
    outcome = {}

    def coordinator():
        try:
            check_coordinator(f"127.0.0.1:{port}", 0, 10, size)
            outcome[0] = "ok"
        except JaxdlError as e:
            outcome[0] = str(e)

    threads = [threading.Thread(target=coordinator)]

    def peer(i, pid, n):
        try:
            check_coordinator(f"127.0.0.1:{port}", pid, 10, n)
            outcome[f"peer{i}"] = "ok"
        except JaxdlError as e:
            outcome[f"peer{i}"] = str(e)

    threads += [threading.Thread(target=peer, args=(i, pid, n)) for i, (pid, n) in enumerate(peers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if refusal.endswith("with 3"):  # all agree: admitted
        assert set(outcome.values()) == {"ok"}, outcome
        return
    assert refusal in outcome[0], outcome
    assert any(refusal in v and "was not admitted" in v for k, v in outcome.items() if k != 0), outcome


def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    import errno

    from jaxdl.runs import run as run_module

    out = tmp_path / "r"
    real = run_module.append_line
    calls = {"n": 0}

    def full_after_two(path, line):
        calls["n"] += 1
        if calls["n"] > 4:  # epochs 1 and 2 (metrics + timing each), then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, line)

    monkeypatch.setattr(run_module, "append_line", full_after_two)
    assert cli_main(["exp", "linreg", "--out", str(out), "--no-progress", "--no-tensorboard"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "--resume" in err[0]
    monkeypatch.setattr(run_module, "append_line", real)  # space is back
    assert cli_main(["exp", "linreg", "--resume", str(out), "--no-progress", "--no-tensorboard"]) == 0
    reference = tmp_path / "ref"
    assert cli_main(["exp", "linreg", "--out", str(reference), "--no-progress", "--no-tensorboard"]) == 0
    assert (out / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()


def test_out_of_device_memory_is_one_line(monkeypatch, capsys):
    class XlaRuntimeError(RuntimeError):  # the name JAX's runtime error has
        pass

    def exhausted(argv):
        raise XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 16.00GiB.\nmore")

    from jaxdl import cli

    monkeypatch.setattr(cli, "main_exp", exhausted)
    assert cli.main(["exp", "mlp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: out of memory on the device (RESOURCE_EXHAUSTED")


@pytest.mark.parametrize("experiment,flags", [("mlp", ["--hidden", "64"]), ("fede", ["--dim", "8"])])
def test_settings_that_cannot_fit_are_refused_before_training(tmp_path, monkeypatch, capsys, experiment, flags):
    """The epoch (a FedE round) is compiled before the run folder exists and its memory, as XLA
    compiled it, compared with what the device has: here a device of 64 KiB."""
    from jaxdl.devices import memory

    monkeypatch.setattr(memory, "device_limit", lambda device: (64 << 10, "free on the test device"))
    out = tmp_path / "r"
    assert cli_main(["exp", experiment, *flags, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and " needs about " in err[0] and "more than the 64.0 KiB free on the test device" in err[0]
    assert "--batch-size" in err[0] and not out.exists()


@pytest.mark.parametrize("experiment,flags", [("mlp", ["--hidden", "1000000"]), ("fede", ["--dim", "100000"]),
                                              ("word2vec", ["--dim", "100000"]), ("softmax", ["--dataset", "digits"])])
def test_a_state_too_large_is_refused_from_its_shapes_before_it_is_made(tmp_path, monkeypatch, capsys, experiment,
                                                                     flags):
    """`jax.eval_shape` sizes the model and optimizer state; nothing of it is allocated."""
    monkeypatch.setenv("JAXDL_MEMORY_LIMIT", "5000" if experiment == "softmax" else "1e8")
    out = tmp_path / "r"
    assert cli_main(["exp", experiment, *flags, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the model and optimizer state needs about "), err
    assert "that JAXDL_MEMORY_LIMIT allows" in err[0] and not out.exists()


@pytest.mark.parametrize("parallel", ["pmap", "shard_map"])
def test_an_epoch_too_large_for_several_devices_is_refused_before_training(cli, tmp_path, parallel):
    """Four CPU devices share the host: each one's part of the compiled epoch, four times,
    against the limit."""
    out = tmp_path / "r"
    proc = cli("exp", "mlp", "--hidden", "16", "--devices", ":4", "--parallel", parallel, "--out", str(out),
               env={"XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=4"), "JAXDL_MEMORY_LIMIT": "400000"})
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert "one epoch needs about " in err[0] and " on each of 4 devices (" in err[0] and not out.exists(), err


@pytest.mark.parametrize("damage,named", [("delete", "lacks epoch(s) 1-3"), ("garbage", "has unreadable line(s) 2"),
                                          ("random", "lacks epoch(s) 1-3 and has unreadable line(s) 1")])
def test_damaged_metrics_rows_are_named_never_silently_dropped(tmp_path, capsys, damage, named):
    out = tmp_path / "r"
    assert cli_main(["exp", "linreg", "--out", str(out), "--max-epochs", "3", "--no-progress"]) == 0
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines()
    if damage == "delete":
        path.unlink()
    elif damage == "garbage":
        path.write_text("\n".join([lines[0], "{not json", lines[2]]) + "\n")
    else:
        noise = random.Random(0).randbytes(300).replace(b"\n", b"x")
        # bytes that str.splitlines would treat as line breaks stay inside the one damaged line
        path.write_bytes(b"\r\x0b\x0c\x1c\xe2\x80\xa8" + noise + b"\r\n")
    capsys.readouterr()
    assert cli_main(["exp", "linreg", "--resume", str(out), "--max-epochs", "4", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert named in err, err


def test_evaluation_chunks_shrink_to_what_fits(monkeypatch, capsys):
    from types import SimpleNamespace

    from jaxdl.eval import link_prediction as lp

    monkeypatch.setattr(lp.psutil, "virtual_memory", lambda: SimpleNamespace(available=2 * 4 * 100 * (50 + 4) * 7))
    assert lp.fitted_batch_size(5, 100, 50) == 5  # fits: kept
    assert lp.fitted_batch_size(10 ** 9, 100, 50) == 7  # half of the memory holds 7 queries' (E, D) blocks
    assert "ranking 7 queries at a time instead" in capsys.readouterr().err


def test_a_run_whose_checkpoints_are_gone_says_it_starts_again(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli_main(["exp", "linreg", "--out", str(out), "--max-epochs", "3", "--no-progress"]) == 0
    before = (out / "metrics.jsonl").read_bytes()
    shutil.rmtree(out / "checkpoints")
    capsys.readouterr()
    assert cli_main(["exp", "linreg", "--resume", str(out), "--max-epochs", "4", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "has no checkpoint to resume from: training starts again at epoch 1" in err
    assert "differs" not in err  # the recomputed epochs equal the logged ones
    assert (out / "metrics.jsonl").read_bytes().startswith(before)


@pytest.mark.parametrize("name", ["JAXDL_READ_LIMIT", "JAXDL_MEMORY_LIMIT"])
def test_byte_limits_from_the_environment_are_numbers_or_one_line(monkeypatch, name):
    from jaxdl.data.bounded import env_bytes

    monkeypatch.delenv(name, raising=False)
    assert env_bytes(name) is None
    monkeypatch.setenv(name, "1e9")
    assert env_bytes(name) == 10**9
    for bad, said in (("abc", "expected a number of bytes"), ("1e999", "expected a number of bytes"),
                      ("0", "must be a positive number of bytes")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(JaxdlError, match=f"{name}='{bad}': {said}"):
            env_bytes(name)
