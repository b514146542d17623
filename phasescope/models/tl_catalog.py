"""TransformerLens's pretrained names and training checkpoints, known without importing torch.

The API validates ``tl:<name>`` models and resolves their checkpoints, but it never imports torch (its
Docker image does not even install it, nor TransformerLens). So the names, aliases and hard-coded
checkpoint labels TransformerLens knows are kept as data: ``phasescope/models/data/tl_catalog.json``, written
from the installed TransformerLens by

    python -m phasescope.models.tl_catalog --write

(run it after upgrading TransformerLens; ``tests/integration/test_hf_models.py`` fails while the file
and the installed library disagree). Workers load the weights through TransformerLens itself.

NeelNanda's models are the exception: TransformerLens lists their checkpoints from the Hugging Face hub
(network), and so does ``checkpoint_steps`` here, with ``huggingface_hub`` (no torch).
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from phasescope.config import Settings, get_settings
from phasescope.errors import ModelLoadError, ModelNotFound

__all__ = [
    "CATALOG_PATH",
    "PICKLED_PREFIXES",
    "REMOTE_CODE_PREFIXES",
    "build_catalog",
    "catalog",
    "checkpoint_steps",
    "known_names",
    "main",
    "official_names",
    "refuse_pickled",
    "refuse_remote_code",
    "resolve_name",
]

CATALOG_PATH = Path(__file__).resolve().parent / "data" / "tl_catalog.json"
# TransformerLens lists these repositories' checkpoints from the hub: files checkpoints/<...>_<label>.pth.
_HUB_LISTED_PREFIX = "NeelNanda/"
_HUB_CHECKPOINT = re.compile(r"checkpoints/.*_(\d+)\.pth")
PICKLED_PREFIXES = ("NeelNanda/", "ArthurConmy/", "Baidicoot/")
"""Repositories whose weights TransformerLens reads as ``.pth`` with a full pickle (``torch.load(...,
weights_only=False)`` in ``transformer_lens.utilities.hf_utils.download_file_from_hf``)."""
REMOTE_CODE_PREFIXES = (
    "bigcode/santacoder",
    "Qwen/Qwen-",
    "Qwen/Qwen3-",
    "microsoft/phi-2",
    "microsoft/phi-4",
    "apple/OpenELM",
    "openai/gpt-oss-",
    "swiss-ai/Apertus-",
)
"""TransformerLens 3.9's ``NEED_REMOTE_CODE_MODELS``: it loads these with ``trust_remote_code=True``, which
runs Python code from the repository whenever its config names some (``auto_map``). A test keeps this
copy equal to TransformerLens's own (the API reads it without importing TransformerLens)."""


@lru_cache(maxsize=1)
def catalog() -> dict[str, Any]:
    """The stored catalog: ``official`` names, ``alias_map`` (lower-case name → official),
    ``checkpoint_sets`` (set name → steps), ``checkpoints`` (official → set name) and the
    ``transformer_lens`` version it was written from."""
    return json.loads(CATALOG_PATH.read_text(encoding="utf-8"))


def official_names() -> list[str]:
    """TransformerLens's official pretrained names, in its order."""
    return list(catalog()["official"])


def known_names() -> list[str]:
    """Every name ``tl:<name>`` accepts: the official names first, then their aliases."""
    names = official_names()
    seen = set(names)
    aliases = catalog()["aliases"]
    for official in catalog()["official"]:
        for alias in aliases.get(official, []):
            if alias not in seen:
                seen.add(alias)
                names.append(alias)
    return names


def resolve_name(name: str) -> str:
    """The official name for an official name or alias, matched without regard to case.

    Raises:
        ModelNotFound: TransformerLens has no such model; ``choices`` holds the closest names.
    """
    official = catalog()["alias_map"].get(name.lower())
    if official is None:
        close = difflib.get_close_matches(name, known_names(), n=10, cutoff=0.5)
        raise ModelNotFound(
            f"TransformerLens has no pretrained model {name!r}"
            + (f"; did you mean {', '.join(close[:3])}?" if close else ""),
            field="model",
            choices=close,
            model=f"tl:{name}",
        )
    return official


def refuse_pickled(official: str, settings: Settings | None = None) -> None:
    """Refuse a model whose weights TransformerLens would unpickle, unless the settings allow it.

    Unpickling a file runs whatever code it names, so a ``.pth`` from the hub is code from the hub.

    Raises:
        ModelLoadError: the model's weights are pickles and ``Settings.allow_pickled_checkpoints`` is off.
    """
    if not official.startswith(PICKLED_PREFIXES):
        return
    settings = settings or get_settings()
    if not settings.allow_pickled_checkpoints:
        raise ModelLoadError(
            f"tl:{official} stores its weights as Python pickles (.pth), and unpickling runs code from the "
            "file; phasescope refuses them unless PHASESCOPE_ALLOW_PICKLED_CHECKPOINTS=true is set for the API "
            "and the workers",
            field="model",
            model=f"tl:{official}",
        )


def refuse_remote_code(official: str, settings: Settings | None = None) -> None:
    """Refuse a model TransformerLens would load with ``trust_remote_code=True``, unless allowed.

    Raises:
        ModelLoadError: the name is one of ``REMOTE_CODE_PREFIXES`` and ``Settings.allow_remote_code``
            is off; the message names the ``hub:`` string that loads the same weights through
            phasescope's own conversion, which never runs repository code.
    """
    if not official.startswith(REMOTE_CODE_PREFIXES):
        return
    settings = settings or get_settings()
    if not settings.allow_remote_code:
        raise ModelLoadError(
            f"TransformerLens loads tl:{official} with trust_remote_code=True, which can run Python code from "
            f"the model's repository; use hub:{official} (phasescope's own conversion, no repository code) "
            "or set PHASESCOPE_ALLOW_REMOTE_CODE=true for the API and the workers",
            field="model",
            model=f"tl:{official}",
        )


def _hub_listed_steps(official: str) -> tuple[int, ...]:
    # Bounded in time, remembered (failures too) by phasescope.models.hub: the API calls this on open GETs.
    from phasescope.models.hub import hub_repo_files

    files = hub_repo_files(official)
    # A token count for some of these models, which is what TransformerLens's checkpoint_value takes.
    return tuple(int(m.group(1)) for f in files if (m := _HUB_CHECKPOINT.match(f)) and m.group(1))


def checkpoint_steps(name: str) -> list[int]:
    """The training checkpoints TransformerLens can load for ``name`` (official or alias); ``[]`` for none.

    Pythia (154 steps) and stanford-crfm (609) come from the catalog; NeelNanda's models are listed from
    the hub (network), as TransformerLens does.
    """
    official = resolve_name(name)
    data = catalog()
    if official in data["checkpoints"]:
        return list(data["checkpoint_sets"][data["checkpoints"][official]])
    if official.startswith(_HUB_LISTED_PREFIX):
        refuse_pickled(official)
        return list(_hub_listed_steps(official))
    return []


def build_catalog() -> dict[str, Any]:
    """The catalog as the installed TransformerLens has it (imports TransformerLens, hence torch)."""
    import logging
    from importlib.metadata import version

    import transformer_lens.loading_from_pretrained as tl_loading

    official = list(tl_loading.OFFICIAL_MODEL_NAMES)
    aliases = {name: list(tl_loading.MODEL_ALIASES.get(name, [])) for name in official}
    sets: dict[str, list[int]] = {}
    checkpoints: dict[str, str] = {}
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # get_checkpoint_labels warns about Pythia v0 naming on every call
    try:
        for name in official:
            if name.startswith(_HUB_LISTED_PREFIX):
                continue  # network: listed at run time
            try:
                labels, _ = tl_loading.get_checkpoint_labels(name)
            except ValueError:  # "<name> is not checkpointed."
                continue
            labels = [int(label) for label in labels]
            key = next((k for k, v in sets.items() if v == labels), f"set{len(sets)}")
            sets[key] = labels
            checkpoints[name] = key
    finally:
        root.setLevel(level)
    return {
        "transformer_lens": version("transformer-lens"),
        "official": official,
        "aliases": {k: v for k, v in aliases.items() if v},
        "alias_map": dict(sorted(tl_loading.make_model_alias_map().items())),
        "checkpoint_sets": sets,
        "checkpoints": checkpoints,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    data = build_catalog()
    if "--write" in args:
        CATALOG_PATH.parent.mkdir(parents=True, exist_ok=True)
        CATALOG_PATH.write_text(json.dumps(data, indent=0, sort_keys=False) + "\n", encoding="utf-8")
        print(
            f"wrote {CATALOG_PATH}: {len(data['official'])} models, {len(data['checkpoints'])} with checkpoints"
        )
    else:
        print(json.dumps({k: (len(v) if isinstance(v, (list, dict)) else v) for k, v in data.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
