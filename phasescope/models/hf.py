"""Models from outside the zoo, loaded into TransformerLens 3.9 for their true pre-softmax scores.

Only ``HookedTransformer`` (and ``HookedEncoder`` for BERT) expose ``hook_attn_scores``: the scores
``q·k/sqrt(d_head)`` after the causal mask (``-inf`` at masked keys) and before the softmax, which the
thermodynamics needs (docs/models.md). Three sources:

- ``tl:<name>``: a TransformerLens pretrained name, downloaded from the Hugging Face hub by
  ``HookedTransformer.from_pretrained`` (training checkpoints where TransformerLens has them);
- a local Hugging Face model directory (``config.json`` + weights), loaded offline;
- a local directory of Hugging Face Trainer checkpoints (``checkpoint-<step>/``): a series.

Weights are never folded or centred: every number is the model's own. A model without training
checkpoints has exactly one checkpoint, ``FINAL_STEP`` (0), meaning "the weights as published".

Importing this module, recognising a directory and listing a Trainer series import neither torch nor
transformers, so the backend can parse model strings and list checkpoints cheaply. The ``tl:``
functions import TransformerLens (and with it torch), because its name and checkpoint lists live there.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from phasescope.errors import CheckpointNotFound, ModelLoadError

if TYPE_CHECKING:  # torch, transformers and TransformerLens load lazily (see the module docstring)
    from transformer_lens import HookedEncoder, HookedTransformer

__all__ = [
    "FINAL_STEP",
    "LoadedHF",
    "attention_hook_names",
    "hf_trainer_checkpoint_dir",
    "hf_trainer_checkpoint_dirs",
    "hf_trainer_steps",
    "is_hf_model_dir",
    "is_hf_trainer_series",
    "known_tl_models",
    "load_hf_directory",
    "load_hf_trainer_checkpoint",
    "load_tl_pretrained",
    "resolve_tl_name",
    "tl_checkpoint_steps",
]

FINAL_STEP = 0
"""The single checkpoint of a model without training checkpoints: the weights as published."""

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")
_CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")

# TransformerLens names whose architecture has no HookedTransformer/HookedEncoder attention we can
# read (encoder-decoder T5, audio encoders).
_UNSUPPORTED_TL_PREFIXES = ("google-t5/", "facebook/hubert", "facebook/wav2vec2")


@dataclass
class LoadedHF:
    """A model ready for measuring.

    Attributes:
        model: ``HookedTransformer`` (causal) or ``HookedEncoder`` (bidirectional), in eval mode.
        tokenizer: the model's tokenizer, or None when the directory has none.
        causal: True for decoders (masked keys are ``-inf`` in the scores), False for encoders.
        family: "gpt2", "gpt-neox", "llama", "bert", ... (TransformerLens's architecture for ``tl:``
            models outside those).
        has_lm_head: False when the directory held no LM head (e.g. a bare ``BertModel``): attention is
            the model's own, but the logits come from a freshly initialised head and mean nothing.
    """

    model: HookedTransformer | HookedEncoder
    tokenizer: Any | None
    causal: bool
    family: str
    has_lm_head: bool = True


# --- TransformerLens pretrained names ----------------------------------------------------------


def _tl_loading() -> ModuleType:
    import transformer_lens.loading_from_pretrained as tl_loading

    return tl_loading


# Names and checkpoints come from phasescope.models.tl_catalog (data, no torch): the API resolves ``tl:``
# models without importing TransformerLens.


def known_tl_models() -> list[str]:
    """Every name TransformerLens accepts: its official names first, then their aliases (no network).

    Aliases (``pythia-70m`` for ``EleutherAI/pythia-70m``) are included so that a membership test on
    a user's ``tl:<name>`` accepts the short names people type; ``resolve_tl_name`` maps either form
    to the official one.
    """
    from phasescope.models import tl_catalog

    return tl_catalog.known_names()


def resolve_tl_name(name: str) -> str:
    """The official name for a TransformerLens name or alias (``pythia-70m`` -> ``EleutherAI/pythia-70m``).

    Raises:
        ModelNotFound: TransformerLens does not know the name; choices holds the closest names.
    """
    from phasescope.models import tl_catalog

    return tl_catalog.resolve_name(name)


def tl_checkpoint_steps(name: str) -> list[int]:
    """Training steps TransformerLens can load for ``name``; ``[]`` when it has none.

    Loads no weights. Pythia (154 steps) and stanford-crfm (609) need no network; NeelNanda's models
    list their hub repository. With ``[]``, the model's only checkpoint is ``FINAL_STEP``.

    Args:
        name: a TransformerLens name or alias, without the ``tl:`` prefix.
    """
    from phasescope.models import tl_catalog

    return tl_catalog.checkpoint_steps(name)


def load_tl_pretrained(name: str, step: int | None, device: str, dtype: str = "float32") -> LoadedHF:
    """Download a TransformerLens pretrained model (optionally at a training step) and load it unfolded.

    Args:
        name: a TransformerLens name or alias, without the ``tl:`` prefix.
        step: a step from ``tl_checkpoint_steps(name)``; None for the final weights. For a model without
            training checkpoints, ``FINAL_STEP`` (or None).
        device: "cpu", "cuda", "cuda:1", ...
        dtype: "float32", "bfloat16" or "float16" (``phasescope.models.dtype``), TransformerLens's ``dtype=``.

    Raises:
        ModelNotFound: unknown name. CheckpointNotFound: no such step. ModelLoadError: the download or
        conversion failed, or the architecture is one we cannot read attention from.
    """
    official = resolve_tl_name(name)
    from phasescope.models import tl_catalog

    tl_catalog.refuse_pickled(official)
    tl_catalog.refuse_remote_code(official)
    if official.startswith(_UNSUPPORTED_TL_PREFIXES):
        raise ModelLoadError(
            f"tl:{name} ({official}) is an encoder-decoder or audio model; phasescope reads attention "
            "from decoder-only HookedTransformer models and BERT encoders only",
            model=f"tl:{name}",
        )
    steps = tl_checkpoint_steps(official)
    checkpoint_value: int | None = None
    if steps and step is not None:
        if step not in steps:
            raise CheckpointNotFound(
                f"tl:{name} has no checkpoint at step {step}",
                field="checkpoints",
                choices=steps,
                model=f"tl:{name}",
                checkpoint=step,
            )
        checkpoint_value = step
    elif not steps and step not in (None, FINAL_STEP):
        raise CheckpointNotFound(
            f"tl:{name} has no training checkpoints; its only checkpoint is step {FINAL_STEP}",
            field="checkpoints",
            choices=[FINAL_STEP],
            model=f"tl:{name}",
            checkpoint=step,
        )
    from transformer_lens import HookedEncoder, HookedTransformer

    from phasescope.models.dtype import torch_dtype

    # Mirrors TransformerLens's own test for loading BERT as BertForPreTraining.
    encoder = "bert" in official.lower()
    try:
        if encoder:
            with _quiet_hooked_encoder():
                model: HookedTransformer | HookedEncoder = HookedEncoder.from_pretrained(
                    official, checkpoint_value=checkpoint_value, device=device, dtype=torch_dtype(dtype)
                )
        else:
            hf_model = None
            if checkpoint_value is not None:
                hf_model = _tl_checkpoint_hf_model(official, checkpoint_value, torch_dtype(dtype))
            # No folding, centring or bias folding: the scores and weights stay the model's own.
            model = HookedTransformer.from_pretrained(
                official,
                hf_model=hf_model,
                checkpoint_value=None if hf_model is not None else checkpoint_value,
                fold_ln=False,
                center_writing_weights=False,
                center_unembed=False,
                fold_value_biases=False,
                refactor_factored_attn_matrices=False,
                device=device,
                dtype=torch_dtype(dtype),
            )
    except (OSError, ValueError, NotImplementedError, RuntimeError, AttributeError) as exc:
        raise ModelLoadError(
            f"could not load tl:{name} ({official}) at step {step}: {exc}",
            model=f"tl:{name}",
            checkpoint=step,
        ) from exc
    model.eval()
    architecture = model.cfg.original_architecture or ""
    family = _TL_FAMILY_NAMES.get(architecture, architecture)
    return LoadedHF(model=model, tokenizer=model.tokenizer, causal=not encoder, family=family)


def _tl_checkpoint_hf_model(official: str, step: int, dtype: Any) -> Any:
    """The Hugging Face model of a TransformerLens model at a training step, loaded by transformers.

    TransformerLens 3.9 loads Pythia checkpoints with ``token=os.environ.get("HF_TOKEN", "")``
    (``loading_from_pretrained.get_pretrained_state_dict``): with HF_TOKEN unset that is ``""``, which
    huggingface_hub 2.x sends as ``Authorization: Bearer `` and its HTTP client refuses, so no Pythia
    checkpoint loads for a user without a token. Loading the checkpoint here, with huggingface_hub's own
    token resolution (HF_TOKEN or a saved login, else no header), and handing it to TransformerLens as
    ``hf_model`` skips that call and keeps TransformerLens's conversion. Setting HF_TOKEN in our
    environment instead would send a made-up credential, which the hub answers with 401.

    The revision is fetched like a ``hub:`` checkpoint (``phasescope.models.hub.download_revision``): by
    commit, so the weights are the ones ``revision_identity`` names even if the branch moves; only
    safetensors when the revision has them; into the snapshot a worker evicts once the step is
    measured. transformers then reads the snapshot as a local directory, which also keeps it from
    asking the hub's converter to open a safetensors pull request for a ``.bin``-only revision (it
    does that in a background thread for hub loads). ``dtype`` is the load dtype (a torch dtype), so
    a half-precision run never holds a float32 copy.
    """
    from transformers import AutoModelForCausalLM

    from phasescope.models.hub import checkpoint_revision, load_from_snapshot

    repo_id, _, commit = checkpoint_revision(f"tl:{official}", step)
    return load_from_snapshot(
        repo_id,
        commit,
        lambda path: AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=dtype),
    )


_TL_FAMILY_NAMES = {
    "GPT2LMHeadModel": "gpt2",
    "GPTNeoXForCausalLM": "gpt-neox",
    "LlamaForCausalLM": "llama",
    "BertForMaskedLM": "bert",
}


# --- local Hugging Face directories ------------------------------------------------------------


def is_hf_model_dir(path: Path | str) -> bool:
    """True when ``path`` holds a Hugging Face ``config.json`` and weights (no file is read)."""
    path = Path(path)
    return (path / "config.json").is_file() and any((path / f).is_file() for f in WEIGHT_FILES)


def _checkpoint_dirs(path: Path) -> dict[int, Path]:
    if not path.is_dir():
        return {}
    found = {}
    for child in path.iterdir():
        match = _CHECKPOINT_DIR.fullmatch(child.name)
        if match and is_hf_model_dir(child):
            found[int(match.group(1))] = child
    return dict(sorted(found.items()))


def hf_trainer_checkpoint_dirs(path: Path | str) -> list[Path]:
    """The ``checkpoint-<step>/`` model directories of a Trainer series, by ascending step (names only)."""
    return list(_checkpoint_dirs(Path(path)).values())


def is_hf_trainer_series(path: Path | str) -> bool:
    """True when ``path`` has at least one ``checkpoint-<step>/`` Hugging Face model directory.

    A Trainer output directory may also hold the final model at its root; callers should check for a
    series first, so that its steps are not hidden behind the single final model.
    """
    return bool(_checkpoint_dirs(Path(path)))


def hf_trainer_steps(path: Path | str) -> list[int]:
    """The steps of a Trainer series, ascending, from the directory names alone (no weights read)."""
    return list(_checkpoint_dirs(Path(path)))


def hf_trainer_checkpoint_dir(path: Path | str, step: int) -> Path:
    """The ``checkpoint-<step>`` directory of a Trainer series.

    Raises:
        CheckpointNotFound: no such step; choices holds the steps there are.
    """
    dirs = _checkpoint_dirs(Path(path))
    if step not in dirs:
        raise CheckpointNotFound(
            f"{path} has no checkpoint-{step}/", field="checkpoints", choices=list(dirs), checkpoint=step
        )
    return dirs[step]


def load_hf_trainer_checkpoint(
    path: Path | str,
    step: int,
    device: str,
    *,
    max_ctx: int | None = None,
    dtype: str = "float32",
    roots: Sequence[Path] | None = None,
) -> LoadedHF:
    """Load one step of a Trainer series (see ``load_hf_directory``)."""
    return load_hf_directory(
        hf_trainer_checkpoint_dir(path, step), device, max_ctx=max_ctx, dtype=dtype, roots=roots
    )


def load_hf_directory(
    path: Path | str,
    device: str,
    *,
    max_ctx: int | None = None,
    dtype: str = "float32",
    roots: Sequence[Path] | None = None,
) -> LoadedHF:
    """Load a local Hugging Face model directory into TransformerLens, offline and unfolded.

    Supported families (by ``config.json`` ``model_type``): GPT-2, GPT-NeoX (Pythia), Llama-style
    causal LMs, and BERT encoders; see ``phasescope.models.hf_convert``.

    Args:
        path: the directory (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``).
        device: "cpu", "cuda", "cuda:1", ...
        max_ctx: cap on n_ctx for causal models (default ``hf_convert.DEFAULT_MAX_CTX``).
        dtype: "float32", "bfloat16" or "float16" (``phasescope.models.dtype``): transformers loads the
            weights in it, and the TransformerLens model is built in it.
        roots: the real model roots (``Settings.allowed_roots``); when given, the directory and every
            file in it (and in the series root, whose tokenizer a Trainer step may use) must resolve
            inside one of them, because transformers opens them itself.

    Raises:
        ModelLoadError: not a model directory, an unsupported family or variant, or weights missing.
        PathNotAllowed: with ``roots``, a file is a link to somewhere outside them.
    """
    path = Path(path)
    if not is_hf_model_dir(path):
        raise ModelLoadError(
            f"{path} is not a Hugging Face model directory (needs config.json and one of "
            f"{', '.join(WEIGHT_FILES)})",
            model=str(path),
        )
    if roots is not None:
        from phasescope.models.files import check_directory_files

        directories = [path, path.parent] if _CHECKPOINT_DIR.fullmatch(path.name) else [path]
        check_directory_files(directories, roots, model=path.name)
    import torch
    import transformers
    from transformer_lens import HookedEncoder, HookedTransformer, HookedTransformerConfig

    from phasescope.models.dtype import torch_dtype
    from phasescope.models.hf_convert import tl_config_dict
    from phasescope.models.hf_families import family_for_model_type

    # Reading model_type ourselves first gives the helpful error before transformers is asked to
    # build a config class it may not even know.
    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}/config.json is not readable JSON: {exc}", model=str(path)) from exc
    family = family_for_model_type(raw.get("model_type"), where=str(path))
    hf_class = getattr(transformers, family.hf_class)
    try:
        hf_model, info = hf_class.from_pretrained(
            str(path), local_files_only=True, dtype=torch_dtype(dtype), output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"transformers could not load {path}: {exc}", model=str(path)) from exc
    missing = list(info.get("missing_keys", []))
    base_missing = [k for k in missing if not k.startswith(family.head_prefixes + family.optional_prefixes)]
    if base_missing:
        raise ModelLoadError(
            f"{path}: the weights lack {len(base_missing)} tensors of the {family.name} body, e.g. "
            f"{base_missing[0]}; refusing to measure randomly initialised attention",
            model=str(path),
        )
    has_lm_head = not any(k.startswith(family.head_prefixes) for k in missing)

    cfg = HookedTransformerConfig(
        **{
            **tl_config_dict(family, hf_model.config, name=path.name, device=device, max_ctx=max_ctx),
            "dtype": torch_dtype(dtype),
        }
    )
    with torch.no_grad():
        state_dict = family.convert(hf_model, cfg)
        state_dict = {k: v.detach().clone() for k, v in state_dict.items()}
    del hf_model
    tokenizer = _local_tokenizer(path)
    model: HookedTransformer | HookedEncoder
    if family.causal:
        model = decoder = HookedTransformer(cfg, tokenizer=tokenizer)
        decoder.load_and_process_state_dict(
            state_dict,
            fold_ln=False,
            center_writing_weights=False,
            center_unembed=False,
            fold_value_biases=False,
            refactor_factored_attn_matrices=False,
        )
    else:
        with _quiet_hooked_encoder():
            model = HookedEncoder(cfg, tokenizer=tokenizer, move_to_device=False)
        # HookedEncoder has no weight processing. Checked by hand rather than strict=True because its
        # mask buffers are not in the converted state dict; a missing parameter must not go unnoticed.
        result = model.load_state_dict(state_dict, strict=False)
        params = dict(model.named_parameters())
        gaps = [k for k in result.missing_keys if k in params] + list(result.unexpected_keys)
        if gaps:
            raise ModelLoadError(f"{path}: BERT conversion left {gaps[:3]} unmatched", model=str(path))
    model.to(device)
    model.eval()
    return LoadedHF(
        model=model, tokenizer=tokenizer, causal=family.causal, family=family.name, has_lm_head=has_lm_head
    )


def _local_tokenizer(path: Path) -> Any | None:
    # Trainer checkpoints often keep the tokenizer only at the series root.
    candidates = [path]
    if _CHECKPOINT_DIR.fullmatch(path.name):
        candidates.append(path.parent)
    for directory in candidates:
        if any((directory / f).is_file() for f in TOKENIZER_FILES):
            from transformers import AutoTokenizer

            try:
                return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ModelLoadError(
                    f"{directory} has tokenizer files that transformers cannot load: {exc}",
                    model=str(path),
                ) from exc
    return None


@contextmanager
def _quiet_hooked_encoder() -> Iterator[None]:
    """Silence HookedEncoder's deprecation warning.

    We pin TransformerLens 3.9 deliberately (only its Hooked* classes expose true pre-softmax scores).
    The warning is raised with stacklevel=2, so it is attributed to *our* module and escapes the
    ``transformer_lens.*`` filters in pyproject.toml.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="HookedEncoder", category=DeprecationWarning)
        yield


# --- hooks ---------------------------------------------------------------------------------------


def attention_hook_names(model: HookedTransformer | HookedEncoder) -> tuple[list[str], list[str]]:
    """Per-layer hook names of the pre-softmax scores and the attention pattern.

    Scores are ``[batch, head, query, key]`` after the causal mask (``-inf`` at masked keys) and any
    padding mask, before the softmax; patterns are their softmax over keys. The same names serve
    HookedTransformer and HookedEncoder.

    Returns:
        (scores hook names, pattern hook names), one of each per layer, in layer order.
    """
    n_layers = model.cfg.n_layers
    scores = [f"blocks.{layer}.attn.hook_attn_scores" for layer in range(n_layers)]
    patterns = [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]
    missing = [name for name in scores + patterns if name not in model.hook_dict]
    assert not missing, f"TransformerLens hook names changed: {missing[:2]}"
    return scores, patterns
