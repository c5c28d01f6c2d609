"""Data access: the real seed file, clear errors for malformed files, fetching with sha256 checks."""

from __future__ import annotations

import json
import shutil

import pytest

from ensemble_instruct_lib import DataError, load_seed_tasks
from ensemble_instruct_lib.data.public import (
    ALL_FILES,
    DATA_FILES,
    REFERENCE_COMMIT,
    REFERENCE_FILES,
    SELF_INSTRUCT_COMMIT,
    data_dir,
    fetch_data,
    load_recorded,
    seed_tasks_path,
    verify_data,
)


def test_real_seed_file(data_root):
    tasks = load_seed_tasks(data_root / "self_instruct" / "seed_tasks.jsonl")
    assert len(tasks) == 175
    assert sum(t.task_type == "A" for t in tasks) == 125
    assert sum(t.task_type == "B" for t in tasks) == 50
    for t in tasks:
        assert (t.task_type == "A") == bool(t.instances[0].input.strip())


def test_default_path_follows_env(data_root, monkeypatch):
    monkeypatch.setenv("EI_DATA_DIR", str(data_root))
    assert data_dir() == data_root.resolve()
    assert len(load_seed_tasks()) == 175
    monkeypatch.setenv("EI_DATA_DIR", "/nonexistent/dir")
    with pytest.raises(DataError, match="fetch-data"):
        seed_tasks_path()


def _write(tmp_path, lines):
    p = tmp_path / "seeds.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


GOOD = json.dumps(
    {"id": "t1", "instruction": "Do it.", "instances": [{"input": "", "output": "ok"}]}
)


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ("{not json", None, "not valid JSON"),
        ('["a list"]', None, "JSON object"),
        (
            json.dumps({"id": "t2", "instances": [{"input": "", "output": "x"}]}),
            "instruction",
            "missing",
        ),
        (json.dumps({"id": "t2", "instruction": "Do.", "instances": []}), "instances", "empty"),
        (
            json.dumps({"id": "t2", "instruction": 5, "instances": [{"output": "x"}]}),
            "instruction",
            "expected str",
        ),
        (
            json.dumps({"id": "t2", "instruction": "Do.", "instances": "x"}),
            "instances",
            "expected list",
        ),
        (
            json.dumps(
                {"id": "t2", "instruction": "Do.", "instances": [{"input": 3, "output": "x"}]}
            ),
            "instances[0].input",
            "expected str",
        ),
        (
            json.dumps({"id": "t2", "instruction": "Do.", "instances": [{"input": ""}]}),
            "instances[0].output",
            "missing",
        ),
        (
            json.dumps({"id": "t2", "instruction": " ", "instances": [{"output": "x"}]}),
            "instruction",
            "empty",
        ),
        (
            json.dumps({"id": "t1", "instruction": "Again.", "instances": [{"output": "x"}]}),
            "id",
            "duplicate",
        ),
    ],
)
def test_malformed_seed_files_name_file_line_and_field(tmp_path, bad, field, words):
    p = _write(tmp_path, [GOOD, "", bad])
    with pytest.raises(DataError) as e:
        load_seed_tasks(p)
    err = e.value
    assert err.path == str(p) and err.line == 3 and err.field == field
    assert words in str(err) and str(p) in str(err) and "line 3" in str(err)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_seed_tasks(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no tasks"):
        load_seed_tasks(_write(tmp_path, [""]))


def test_fetch_from_local_copy_and_verify(tmp_path, data_root):
    dest = tmp_path / "data"
    result = fetch_data(dest, source=data_root)
    assert set(result.values()) == {"copied"} and len(result) == len(ALL_FILES)
    assert {f.local for f in REFERENCE_FILES} <= set(result)  # the authors' templates too
    assert set(verify_data(dest).values()) == {"ok"}
    assert set(fetch_data(dest, source=data_root).values()) == {"present"}
    assert len(load_recorded(["davinci", "text-davinci-003"], dest)) == 252


def test_fetch_download_checks_sha256_and_keeps_good_files(tmp_path, data_root):
    by_url = {f.url: data_root / f.local for f in ALL_FILES}
    corrupt = DATA_FILES[3].url
    pinned = (
        f"https://raw.githubusercontent.com/yizhongw/self-instruct/{SELF_INSTRUCT_COMMIT}/",
        f"https://raw.githubusercontent.com/IBM/ensemble-instruct/{REFERENCE_COMMIT}/",
    )

    def fake_download(url, path):
        assert url.startswith(pinned)
        shutil.copyfile(by_url[url], path)
        if url == corrupt:
            with open(path, "ab") as f:
                f.write(b"tampered")

    dest = tmp_path / "data"
    with pytest.raises(DataError, match="sha256"):
        fetch_data(dest, download=fake_download)
    status = verify_data(dest)
    assert [status[f.local] for f in DATA_FILES[:3]] == ["ok"] * 3
    assert status[DATA_FILES[3].local] == "missing"  # the bad copy was not kept
    assert not list(dest.rglob("*.part"))

    def good_download(url, path):
        shutil.copyfile(by_url[url], path)

    res = fetch_data(dest, download=good_download)
    assert res[DATA_FILES[0].local] == "present" and res[DATA_FILES[3].local] == "downloaded"
    assert set(verify_data(dest).values()) == {"ok"}


def test_reference_files_are_pinned_at_the_authors_commit(data_root):
    urls = {f.url for f in REFERENCE_FILES}
    base = f"https://raw.githubusercontent.com/IBM/ensemble-instruct/{REFERENCE_COMMIT}/"
    assert urls == {
        base + "ensemble_instruct/gen_instructions.py",
        base + "ensemble_instruct/templates/instance_template.py",
        base + "ensemble_instruct/gen_output_zeroshot.py",
    }
    status = verify_data(data_root, files=REFERENCE_FILES)
    assert set(status.values()) == {"ok"}, status


def test_one_recorded_model_check_names_unknown_and_known():
    """data.public.check_recorded_models is the check every recorded-model reader uses."""
    from ensemble_instruct_lib.analysis.recorded_ensemble import ensemble_recorded
    from ensemble_instruct_lib.data.public import check_recorded_models, predictions_path
    from ensemble_instruct_lib.engines.recorded import RecordedBackend
    from ensemble_instruct_lib.errors import ConfigError

    check_recorded_models(["davinci", "text-davinci-003"])
    message = "unknown recorded models \\['gpt-9'\\]; choose from \\['davinci', 'text-davinci-001'"
    for call in (
        lambda: check_recorded_models(["davinci", "gpt-9"]),
        lambda: predictions_path("gpt-9"),
        lambda: RecordedBackend("gpt-9"),
        lambda: ensemble_recorded(["davinci", "gpt-9"]),
    ):
        with pytest.raises(ConfigError, match=message):
            call()
