"""The SuperNI test split: task list and references, task files, the id check, the download.

Task files come from a small fixture (tests/fixtures/superni_tasks) whose task names and instance
ids are real (the first five of two test tasks) and whose inputs were written for the tests.
No test touches the network: the download function is replaced.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from ensemble_instruct_lib.data.superni import (
    ENV_VAR,
    NI_COMMIT,
    download_superni_tasks,
    load_references,
    load_superni_items,
    load_task,
    load_test_tasks,
    task_url,
)
from ensemble_instruct_lib.engines.scripted import ScriptedBackend
from ensemble_instruct_lib.errors import DataError
from ensemble_instruct_lib.train.evaluate import evaluate_backend, score_predictions

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "superni_tasks"
TASKS = ["task1159_bard_analogical_reasoning_containers", "task828_copa_commonsense_cause_effect"]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_task_list_and_references_agree():
    tasks = load_test_tasks()
    refs = load_references()
    assert len(tasks) == 119 and len(refs) == 11810
    per_task = Counter(r.task_id for r in refs)
    assert set(per_task) == set(tasks)
    short = {t: n for t, n in per_task.items() if n != 100}
    assert short == {
        "task760_msr_sqa_long_text_generation": 26,
        "task602_wikitext-103_answer_generation": 84,
    }
    assert len({r.task_category for r in refs}) == 12


def test_references_score_100_against_themselves():
    refs = load_references()
    res = score_predictions({r.id: r.references[-1] for r in refs}, refs)
    assert res.rougeL == 100.0 and res.exact_match == 100.0 and res.n == 11810
    assert len(res.per_task) == 119 and len(res.per_category) == 12
    assert "rougeL_for_title_generation" in res.metrics()


def test_load_items_from_fixture():
    items = load_superni_items(FIXTURE, tasks=TASKS, max_instances=5)
    assert len(items) == 10
    first = items[0]
    assert first.id == "task1159-1f85921a609441d3b7a93581c1ccd801"
    assert first.instruction.startswith("Two analogies relate items")
    assert first.input == "letters : envelope. potatoes : ?"
    assert first.references == ("sack",) and first.task_category == "Word Analogy"
    assert items[4].references == ("jug", "bottle")
    assert [it.task_id for it in items] == [TASKS[0]] * 5 + [TASKS[1]] * 5
    # the tasks folder itself, or the environment variable, work too
    assert load_superni_items(FIXTURE / "tasks", tasks=TASKS, max_instances=5) == items


def test_env_var_names_the_folder(monkeypatch):
    with pytest.raises(DataError, match=ENV_VAR):
        load_superni_items(tasks=TASKS, max_instances=5)
    monkeypatch.setenv(ENV_VAR, str(FIXTURE))
    assert len(load_superni_items(tasks=TASKS[:1], max_instances=3)) == 3


def test_fixture_evaluates_end_to_end():
    items = load_superni_items(FIXTURE, tasks=TASKS, max_instances=5)
    gold = {it.input: it.references[0] for it in items}
    res = evaluate_backend(ScriptedBackend(lambda p, params, i: _gold_for(p, gold)), items)
    assert res.rougeL == 100.0 and list(res.per_task.index) == TASKS


def _gold_for(prompt: str, gold: dict[str, str]) -> str:
    return next(v for k, v in gold.items() if k in prompt)


def _copy_fixture(tmp_path: Path) -> Path:
    dest = tmp_path / "ni"
    shutil.copytree(FIXTURE, dest)
    return dest


def test_id_mismatch_names_the_task_file(tmp_path):
    root = _copy_fixture(tmp_path)
    path = root / "tasks" / f"{TASKS[1]}.json"
    task = json.loads(path.read_text())
    inst = task["Instances"]
    inst[1]["id"], inst[2]["id"] = inst[2]["id"], inst[1]["id"]
    path.write_text(json.dumps(task))
    with pytest.raises(DataError) as e:
        load_superni_items(root, tasks=TASKS, max_instances=5)
    msg = str(e.value)
    assert str(path) in msg and "instance 1" in msg and NI_COMMIT[:12] in msg
    with pytest.raises(DataError, match="has 5 instances, the references list 6"):
        load_superni_items(root, tasks=TASKS[:1], max_instances=6)


def test_missing_and_malformed_task_files(tmp_path):
    root = _copy_fixture(tmp_path)
    with pytest.raises(DataError, match="task file not found") as e:
        load_superni_items(root, tasks=["task1356_xlsum_title_generation"], max_instances=5)
    assert "download_superni_tasks" in str(e.value)
    with pytest.raises(DataError, match="references list no instance"):
        load_superni_items(root, tasks=["task000_not_a_test_task"])
    bad = root / "tasks" / "bad.json"
    bad.write_text('{"Instances": []}')
    with pytest.raises(DataError) as e:
        load_task(bad)
    assert e.value.field == "Definition"
    bad.write_text('{"Definition": ["d"], "Instances": [{"id": "x"}]}')
    with pytest.raises(DataError) as e:
        load_task(bad)
    assert e.value.field == "Instances[0].input"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_task(bad)


class _FakeGitHub:
    """Serves task files from the fixture (or any given bytes) instead of raw.githubusercontent."""

    def __init__(self, body: bytes | None = None) -> None:
        self.urls: list[str] = []
        self.body = body

    def __call__(self, url: str, dest: Path) -> None:
        self.urls.append(url)
        name = url.rsplit("/", 1)[-1]
        src = FIXTURE / "tasks" / name
        if self.body is not None:
            dest.write_bytes(self.body)
        elif src.exists():
            shutil.copyfile(src, dest)
        else:
            dest.write_text(json.dumps({"Definition": ["d"], "Instances": []}))


def test_download_writes_pinned_task_files(tmp_path):
    fake = _FakeGitHub()
    status = download_superni_tasks(tmp_path / "ni", tasks=TASKS, download=fake)
    assert status == dict.fromkeys(TASKS, "downloaded")
    assert fake.urls == [task_url(t) for t in TASKS]
    assert fake.urls[0] == (
        "https://raw.githubusercontent.com/allenai/natural-instructions/"
        f"{NI_COMMIT}/tasks/{TASKS[0]}.json"
    )
    assert len(load_superni_items(tmp_path / "ni", tasks=TASKS, max_instances=5)) == 10
    again = _FakeGitHub()
    assert download_superni_tasks(tmp_path / "ni", tasks=TASKS, download=again) == dict.fromkeys(
        TASKS, "present"
    )
    assert again.urls == []


def test_download_defaults_to_the_119_test_tasks(tmp_path):
    fake = _FakeGitHub()
    status = download_superni_tasks(tmp_path, download=fake)
    assert len(status) == 119 and len(fake.urls) == 119
    assert all(f"/{NI_COMMIT}/tasks/" in u for u in fake.urls)


def test_download_rejects_a_bad_file_and_keeps_nothing(tmp_path):
    with pytest.raises(DataError, match="not a natural-instructions task file") as e:
        download_superni_tasks(tmp_path, tasks=TASKS[:1], download=_FakeGitHub(b"<html>404</html>"))
    assert task_url(TASKS[0]) in str(e.value)
    assert list((tmp_path / "tasks").iterdir()) == []
