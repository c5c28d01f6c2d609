"""The main command offline: where the data is read from (path, $EI_DATA_DIR, shared/data beside
the checkout, the default), `fetch-data` finding a local copy instead of downloading, a failed
download as one line with exit status 2 (in-process and through the real CLI in a subprocess),
and a hub model id that cannot be reached as one line naming the id."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
from email.message import Message
from pathlib import Path

import pytest

from ensemble_instruct_lib.cli import main
from ensemble_instruct_lib.data import public
from ensemble_instruct_lib.data.public import (
    ALL_FILES,
    DATA_FILES,
    SEED_FILE,
    fetch_data,
    locate_data,
    verify_data,
)
from ensemble_instruct_lib.errors import ConfigError, NetworkError

REPO = Path(__file__).resolve().parents[1]


def _seed_folder(root: Path) -> Path:
    (root / SEED_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / SEED_FILE).write_text("{}\n")
    return root


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A fake checkout's places: shared/data beside it (holding the seed file) and the default;
    $EI_DATA_DIR unset."""
    shared = _seed_folder(tmp_path / "shared" / "data")
    default = tmp_path / "checkout" / "seeds" / "data"
    monkeypatch.setattr(public, "SHARED_DATA_DIR", shared)
    monkeypatch.setattr(public, "DEFAULT_DATA_DIR", default)
    monkeypatch.delenv("EI_DATA_DIR", raising=False)
    return shared, default


def _unreachable(url: str, path: Path) -> None:
    raise urllib.error.URLError("Name or service not known")


def _no_download(url: str, path: Path) -> None:
    raise AssertionError(f"nothing should be downloaded, asked for {url}")


# --------------------------------------------------------------------------------------------
# the order of places


def test_the_shared_folder_is_the_one_beside_the_checkout():
    shared, default = REPO.parent / "shared" / "data", REPO / "seeds" / "data"
    assert shared == public.SHARED_DATA_DIR  # what conftest.py and scripts/test.sh read too
    assert default == public.DEFAULT_DATA_DIR


def test_the_shared_folder_beats_the_default(places):
    shared, _ = places
    loc = locate_data()
    assert (loc.path, loc.source) == (shared.resolve(), "shared")
    assert "beside the checkout" in loc.reason
    assert public.data_dir() == shared.resolve()
    assert public.seed_tasks_path() == shared.resolve() / SEED_FILE


def test_the_env_var_beats_the_shared_folder_and_a_path_beats_both(places, tmp_path, monkeypatch):
    monkeypatch.setenv("EI_DATA_DIR", str(tmp_path / "mine"))
    loc = locate_data()
    assert (loc.path, loc.source) == ((tmp_path / "mine").resolve(), "env")
    assert "$EI_DATA_DIR" in loc.reason
    loc = locate_data(tmp_path / "given")
    assert (loc.path, loc.source) == ((tmp_path / "given").resolve(), "argument")


def test_a_shared_folder_without_the_seed_file_is_ignored(places):
    shared, default = places
    (shared / SEED_FILE).unlink()
    loc = locate_data()
    assert (loc.path, loc.source) == (default, "default")
    assert "EI_DATA_DIR is unset" in loc.reason


def test_an_installed_package_has_no_shared_folder(places, monkeypatch):
    _, default = places
    monkeypatch.setattr(public, "SHARED_DATA_DIR", None)
    assert locate_data() == public.DataLocation(default, "default")


# --------------------------------------------------------------------------------------------
# fetch-data and verify-data with a local copy


def test_fetch_data_downloads_nothing_when_the_shared_folder_verifies(
    data_root, monkeypatch, capsys
):
    monkeypatch.setattr(public, "SHARED_DATA_DIR", data_root)
    monkeypatch.delenv("EI_DATA_DIR", raising=False)
    monkeypatch.setattr(public, "_download", _no_download)
    assert main(["fetch-data"]) == 0
    out = capsys.readouterr().out
    assert f"data folder: {data_root.resolve()} (the shared/data folder beside the checkout)" in out
    assert f"all {len(ALL_FILES)} pinned files are present and verified" in out
    assert "nothing to download" in out
    assert main(["verify-data"]) == 0
    assert "the shared/data folder beside the checkout" in capsys.readouterr().out


def test_fetch_data_dest_copies_from_the_shared_folder(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(public, "SHARED_DATA_DIR", data_root)
    monkeypatch.delenv("EI_DATA_DIR", raising=False)
    monkeypatch.setattr(public, "_download", _no_download)
    dest = tmp_path / "copy"
    assert main(["fetch-data", "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert f"data folder: {dest.resolve()} (--dest)" in out
    assert f"copying from {data_root.resolve()} (the shared/data folder" in out
    assert out.count("copied  ") == len(ALL_FILES)
    assert f"set EI_DATA_DIR={dest.resolve()}" in out
    assert set(verify_data(dest).values()) == {"ok"}


def test_fetch_data_dest_downloads_when_the_local_copy_does_not_verify(
    data_root, tmp_path, monkeypatch, capsys
):
    broken = tmp_path / "broken"
    shutil.copytree(data_root / "self_instruct", broken / "self_instruct")  # no templates
    monkeypatch.setenv("EI_DATA_DIR", str(broken))
    monkeypatch.setattr(public, "_download", _unreachable)
    assert main(["fetch-data", "--dest", str(tmp_path / "dest")]) == 2
    captured = capsys.readouterr()
    assert "copying from" not in captured.out
    assert "could not download" in captured.err


def test_verify_data_says_which_folder_and_why(data_root, monkeypatch, capsys):
    monkeypatch.setenv("EI_DATA_DIR", str(data_root))
    assert main(["verify-data"]) == 0
    assert f"data folder: {data_root.resolve()} (from $EI_DATA_DIR)" in capsys.readouterr().out
    assert main(["verify-data", "--data-dir", str(data_root)]) == 0
    assert f"{data_root.resolve()} (--data-dir)" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# a failed download


def _assert_one_line_network_error(err: str, url: str, reason: str) -> None:
    err = err.strip()
    assert "\n" not in err, err
    assert "Traceback" not in err
    assert err.startswith(f"error: could not download {url}: ")
    assert f"this machine could not reach it ({reason})" in err
    assert "fetch-data --from DIR" in err and "EI_DATA_DIR=DIR" in err


def test_a_failed_download_is_one_line_and_exit_2(places, monkeypatch, capsys):
    _, default = places
    (places[0] / SEED_FILE).unlink()  # no shared copy: fetch-data downloads into the default
    monkeypatch.setattr(public, "_download", _unreachable)
    assert main(["fetch-data"]) == 2
    captured = capsys.readouterr()
    _assert_one_line_network_error(captured.err, ALL_FILES[0].url, "Name or service not known")
    assert f"data folder: {default}" in captured.out and "the default location" in captured.out
    assert not list(default.rglob("*.part"))


def test_files_downloaded_before_the_failure_are_kept(data_root, tmp_path, monkeypatch, capsys):
    by_url = {f.url: data_root / f.local for f in ALL_FILES}
    calls = []

    def flaky(url: str, path: Path) -> None:
        calls.append(url)
        if len(calls) > 3:
            raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
        shutil.copyfile(by_url[url], path)

    dest = tmp_path / "data"
    monkeypatch.setenv("EI_DATA_DIR", str(dest))
    monkeypatch.setattr(public, "_download", flaky)
    assert main(["fetch-data"]) == 2
    err = capsys.readouterr().err
    _assert_one_line_network_error(err, DATA_FILES[3].url, "Name or service not known")
    assert f"the 3 file(s) already in {dest.resolve()} are kept" in err
    status = verify_data(dest)
    assert [status[f.local] for f in DATA_FILES[:4]] == ["ok", "ok", "ok", "missing"]
    assert not list(dest.rglob("*.part"))
    res = fetch_data(dest, source=data_root)  # the way out the message names
    assert [res[f.local] for f in DATA_FILES[:4]] == ["present"] * 3 + ["copied"]


def test_an_http_error_names_the_status(tmp_path):
    def not_found(url: str, path: Path) -> None:
        raise urllib.error.HTTPError(url, 404, "Not Found", Message(), None)

    with pytest.raises(NetworkError) as e:
        fetch_data(tmp_path, download=not_found)
    assert e.value.url == ALL_FILES[0].url and e.value.reason == "HTTP 404 Not Found"
    assert "the server answered HTTP 404 Not Found" in str(e.value)


def test_a_local_disk_error_is_not_called_a_network_error(tmp_path):
    def disk_full(url: str, path: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left") as e:
        fetch_data(tmp_path, download=disk_full)
    assert not isinstance(e.value, NetworkError)


def _refused_proxy_env(**extra: str) -> dict[str, str]:
    """This environment with every HTTPS request sent to a local port nothing listens on: the
    real downloader fails at once, with or without internet."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "ei_data_dir")}
    proxy = f"http://127.0.0.1:{port}"
    env.update(https_proxy=proxy, HTTPS_PROXY=proxy, **extra)
    return env


def _run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_real_cli_prints_one_line_when_the_download_fails(tmp_path):
    empty = tmp_path / "empty"
    env = _refused_proxy_env(EI_DATA_DIR=str(empty))
    proc = _run_cli(["-m", "ensemble_instruct_lib", "fetch-data"], env, REPO)
    assert proc.returncode == 2, proc.stderr
    _assert_one_line_network_error(proc.stderr, ALL_FILES[0].url, "Connection refused")
    assert f"data folder: {empty.resolve()} (from $EI_DATA_DIR)" in proc.stdout


def test_the_real_cli_with_dest_and_no_local_copy(tmp_path):
    script = (
        "import sys\n"
        "from ensemble_instruct_lib.data import public\n"
        "public.SHARED_DATA_DIR = None  # as on a machine with no shared/data beside the checkout\n"
        "from ensemble_instruct_lib.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    dest = tmp_path / "dest"
    proc = _run_cli(["-c", script, "fetch-data", "--dest", str(dest)], _refused_proxy_env(), REPO)
    assert proc.returncode == 2, proc.stderr
    _assert_one_line_network_error(proc.stderr, ALL_FILES[0].url, "Connection refused")
    assert not list(dest.rglob("*.part"))


# --------------------------------------------------------------------------------------------
# a hub model id that cannot be reached


needs_hf = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs hf extra")


@pytest.fixture
def hub_offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 (transformers fails at once, no network) and an empty hub cache."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _assert_one_line_hub_error(msg: str, model: str) -> None:
    assert "\n" not in msg and "Traceback" not in msg
    assert f"model {model!r} could not be loaded" in msg
    assert "the Hugging Face hub (https://huggingface.co) could not be reached" in msg
    assert "HF_HUB_OFFLINE is set" in msg
    assert "a known model name (gemma-3-270m" in msg and "models list" in msg
    assert "run with HF_HUB_OFFLINE=1" in msg


@needs_hf
def test_an_unreachable_hub_id_names_the_model_and_the_way_out(hub_offline):
    from ensemble_instruct_lib.engines.hf import HFBackend

    with pytest.raises(ConfigError) as e:
        HFBackend("Qwen/Qwen2.5-0.5B", cache_dir=str(hub_offline))
    _assert_one_line_hub_error(str(e.value), "Qwen/Qwen2.5-0.5B")


@needs_hf
def test_the_run_command_prints_one_line_for_an_unreachable_hub_id(
    hub_offline, tmp_path, capsys, data_root
):
    cfg = tmp_path / "hub.yaml"
    cfg.write_text("name: hub\ngenerator: {kind: hf, model: Qwen/Qwen2.5-0.5B}\n")
    rc = main(["run", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith(f"error: {cfg}, line 2: generator.model: model 'Qwen/Qwen2.5-0.5B'")
    _assert_one_line_hub_error(err, "Qwen/Qwen2.5-0.5B")


def _no_hub() -> BaseException:
    """What huggingface_hub's client raises on a machine without DNS (an httpx ConnectError with
    the socket error as its cause), built without a network."""
    try:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as e:
            raise ConnectionError("[Errno -2] Name or service not known") from e
    except ConnectionError as e:
        return e


@pytest.fixture
def hub_down(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE unset and a hub that does not answer the probe (no request is made)."""
    import huggingface_hub.constants

    from ensemble_instruct_lib.engines import hf

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf, "hub_probe", _no_hub)
    return tmp_path / "hub"


def _fake_hub_cache(cache: Path, model_dir: Path, repo_id: str) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in model_dir.iterdir():
        shutil.copy(f, snapshot / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


@needs_hf
def test_without_offline_mode_an_unreachable_hub_fails_at_once_with_the_reason(hub_down):
    from ensemble_instruct_lib.engines.hf import HFBackend

    with pytest.raises(ConfigError) as e:
        HFBackend("Qwen/Qwen2.5-0.5B", cache_dir=str(hub_down))
    msg = str(e.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE is set" not in msg
    assert "'Qwen/Qwen2.5-0.5B' could not be loaded" in msg
    assert "could not be reached to download it (Name or service not known)" in msg
    assert "run with HF_HUB_OFFLINE=1" in msg


@needs_hf
def test_a_cached_hub_id_loads_from_the_cache_when_the_hub_is_down(hub_down, tiny_gpt2_dir, caplog):
    from ensemble_instruct_lib.engines import hf

    _fake_hub_cache(hub_down, tiny_gpt2_dir, "tiny-org/tiny-gpt2")
    opts = hf._offline_load_options("tiny-org/tiny-gpt2", None, str(hub_down))
    assert opts == {"local_files_only": True}
    with caplog.at_level("WARNING"):
        be = hf.HFBackend("tiny-org/tiny-gpt2", cache_dir=str(hub_down))
    assert be.revision == "0123456789abcdef0123456789abcdef01234567"
    asked = [r.getMessage() for r in caplog.records if "huggingface.co" in r.getMessage()]
    assert not asked, asked  # no request (each would be retried for ~25 s offline)
    assert hf._offline_load_options(str(tiny_gpt2_dir), None, None) == {}  # a folder: no probe


@needs_hf
def test_a_reachable_hub_changes_nothing(monkeypatch):
    from ensemble_instruct_lib.engines import hf

    monkeypatch.setattr(hf, "_offline_mode", lambda: False)
    monkeypatch.setattr(hf, "hub_probe", lambda: None)
    assert hf._offline_load_options("Qwen/Qwen2.5-0.5B", None, None) == {}
