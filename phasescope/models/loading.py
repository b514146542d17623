"""Models and checkpoints: one string names a model everywhere (CLI, REST API, dashboard).

- ``zoo:<name>``  a series trained by our own zoo (``phasescope.zoo``), stored under the zoo directory;
                  ``zoo:<name>-seed<N>`` another training seed, ``-every<N>`` denser checkpoints.
- ``tl:<name>``   a TransformerLens pretrained name, with its training checkpoints where TL has them.
- ``hub:<org>/<name>``  any Hugging Face hub repository; its checkpoints are its branches (``phasescope.models.hub``).
- a local path    a phasescope series directory (``manifest.json`` + safetensors), a Hugging Face model
                  directory, or a directory of Hugging Face Trainer ``checkpoint-<step>/`` folders.

Checkpoints are addressed by training step. Listing them never loads weights. Local paths resolve only
under the configured model roots (``Settings.allowed_roots``). Weights load through safetensors (our
series) or transformers' own loaders; never a pickle.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from phasescope.config import Settings, get_settings
from phasescope.errors import ModelLoadError, ModelNotFound, PathNotAllowed
from phasescope.models.series import SeriesManifest, is_series_dir, load_series_state_dict, read_manifest

__all__ = [
    "LoadedModel",
    "ModelCache",
    "ModelInfo",
    "ModelRef",
    "list_checkpoints",
    "list_models",
    "load_model",
    "parse_model_spec",
    "resolve_local_path",
]

Kind = Literal["zoo", "tl", "hub", "series", "hf", "hf_series"]


@dataclass(frozen=True)
class ModelRef:
    """A parsed model string: what kind of model it is and where it lives."""

    spec: str
    kind: Kind
    name: str
    path: Path | None = None


@dataclass
class ModelInfo:
    """What the catalogue shows about a model, without loading weights."""

    model: str
    kind: Kind
    description: str = ""
    available: bool = True
    n_checkpoints: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedModel:
    """A model at one checkpoint, ready to run with hooks."""

    ref: ModelRef
    step: int
    model: Any  # HookedTransformer or HookedEncoder
    causal: bool = True
    tokenizer: Any = None
    task: dict[str, Any] | None = None
    family: str = ""
    has_lm_head: bool = True  # False for a bare encoder: its attention is real, its logits are not
    dtype: str = "float32"  # what the weights were loaded in (phasescope.models.dtype)


def resolve_local_path(raw: str, settings: Settings | None = None) -> Path:
    """Resolve a local model path, refusing anything outside the configured model roots.

    A relative path is looked up under each root in turn. Symlinks are resolved before the check, so a
    link cannot lead out of a root.

    Raises:
        PathNotAllowed: the path lies outside every root.
        ModelNotFound: no such directory under the roots.
    """
    settings = settings or get_settings()
    roots = settings.allowed_roots
    try:
        candidate = Path(raw).expanduser()
        candidates = [candidate] if candidate.is_absolute() else [root / candidate for root in roots]
        for path in candidates:
            real = path.resolve()
            if not any(real == root or real.is_relative_to(root) for root in roots):
                raise PathNotAllowed(
                    f"{raw} is outside the configured model roots; put it under one of "
                    f"{', '.join(str(r) for r in roots)} or add its directory to PHASESCOPE_MODEL_ROOTS",
                    field="model",
                )
            if real.is_dir():
                return real
    except (RuntimeError, OSError, ValueError) as exc:
        # "~nobody", a NUL byte, a name too long for the file system: not a model directory.
        raise ModelNotFound(f"{raw!r} is not a usable model path ({exc})", field="model") from exc
    raise ModelNotFound(
        f"no model directory {raw} under the model roots ({', '.join(str(r) for r in roots)})", field="model"
    )


def parse_model_spec(spec: str, settings: Settings | None = None) -> ModelRef:
    """Parse a model string into a ModelRef (no weights are loaded)."""
    settings = settings or get_settings()
    spec = spec.strip()
    if spec.startswith("zoo:"):
        # A recipe, optionally a seed/schedule variant: zoo:induction-2l-seed3 (docs/zoo.md).
        from phasescope.zoo.variants import parse_series_name

        name = parse_series_name(spec).name
        return ModelRef(spec, "zoo", name, settings.zoo_dir / name)
    if spec.startswith("tl:"):
        from phasescope.models.hf import known_tl_models

        name = spec[3:]
        known = known_tl_models()
        if name not in known:
            close = [k for k in known if name.lower() in k.lower()][:20]
            raise ModelNotFound(
                f"{name!r} is not a TransformerLens pretrained name",
                field="model",
                choices=close or known[:50],
            )
        from phasescope.models.tl_catalog import refuse_pickled, refuse_remote_code, resolve_name

        refuse_pickled(resolve_name(name), settings)
        refuse_remote_code(resolve_name(name), settings)
        return ModelRef(spec, "tl", name)
    if spec.startswith("hub:"):
        from phasescope.models.hub import parse_repo_id

        return ModelRef(spec, "hub", parse_repo_id(spec[4:], spec))
    path = resolve_local_path(spec, settings)
    ref = _local_ref(spec, path)
    if ref is not None:
        # Listing and fingerprinting open files in here (manifest, configs, safetensors headers):
        # each must resolve inside a root, not only the directory (phasescope.models.files).
        from phasescope.models.files import check_directory_files
        from phasescope.models.hf import hf_trainer_checkpoint_dirs

        directories = [path, *hf_trainer_checkpoint_dirs(path)] if ref.kind == "hf_series" else [path]
        check_directory_files(directories, settings.allowed_roots, model=path.name)
        return ref
    raise ModelNotFound(
        f"{spec} holds neither a phasescope manifest.json, a Hugging Face config.json, nor checkpoint-<step>/ "
        "folders",
        field="model",
    )


def _local_ref(spec: str, path: Path) -> ModelRef | None:
    """What kind of local model directory ``path`` is, or None when it is none."""
    if is_series_dir(path):
        return ModelRef(spec, "series", path.name, path)
    from phasescope.models.hf import is_hf_model_dir, is_hf_trainer_series

    # A Trainer output folder often also holds the final model: the series view shows every step.
    if is_hf_trainer_series(path):
        return ModelRef(spec, "hf_series", path.name, path)
    if is_hf_model_dir(path):
        return ModelRef(spec, "hf", path.name, path)
    return None


def _zoo_manifest(ref: ModelRef) -> SeriesManifest:
    assert ref.path is not None
    if not is_series_dir(ref.path):
        raise ModelNotFound(
            f"zoo series {ref.name} is not trained yet: run `phasescope zoo train {ref.name}`", field="model"
        )
    return read_manifest(ref.path)


def list_checkpoints(spec: str | ModelRef, settings: Settings | None = None) -> list[int]:
    """The training steps a model has, without loading any weights."""
    ref = spec if isinstance(spec, ModelRef) else parse_model_spec(spec, settings)
    if ref.kind == "zoo":
        return list(_zoo_manifest(ref).steps)
    if ref.kind == "series":
        assert ref.path is not None
        return list(read_manifest(ref.path).steps)
    from phasescope.models import hf as hf_models

    if ref.kind == "tl":
        return hf_models.tl_checkpoint_steps(ref.name) or [hf_models.FINAL_STEP]
    if ref.kind == "hub":
        from phasescope.models.hub import hub_checkpoints

        return [c.step for c in hub_checkpoints(ref.name, settings)]
    if ref.kind == "hf_series":
        assert ref.path is not None
        return hf_models.hf_trainer_steps(ref.path)
    return [hf_models.FINAL_STEP]


def _build_series_model(manifest: SeriesManifest, device: str, dtype: str = "float32") -> Any:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from phasescope.models.dtype import torch_dtype

    with warnings.catch_warnings():
        # 3.9 deprecates HookedTransformer; we pin it on purpose (true pre-softmax scores).
        warnings.simplefilter("ignore", DeprecationWarning)
        cfg = HookedTransformerConfig(**{**manifest.config, "device": device, "dtype": torch_dtype(dtype)})
        return HookedTransformer(cfg)


def load_model(
    spec: str | ModelRef,
    step: int | None = None,
    device: str = "cpu",
    settings: Settings | None = None,
    reuse: LoadedModel | None = None,
    dtype: str = "auto",
    state: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a model at one checkpoint (``step=None``: the last one).

    Args:
        spec: model string or parsed ref.
        step: training step; must be one of ``list_checkpoints(spec)``.
        device: torch device string.
        settings: settings to resolve paths with.
        reuse: a model of the same series already in memory: its architecture is kept and only the
            weights are swapped, so a sweep does not rebuild the model at every checkpoint.
        dtype: what to load the weights in: "float32", "bfloat16", "float16", or "auto"
            (``phasescope.models.dtype.resolve_load_dtype``: float32 on a CPU).
        state: the step's state dict already read (``phasescope.models.prefetch``; our series only),
            loaded instead of reading the file again.
    """
    from phasescope.models.dtype import count_parameters, resolve_load_dtype

    ref = spec if isinstance(spec, ModelRef) else parse_model_spec(spec, settings)
    steps = list_checkpoints(ref, settings)
    step = steps[-1] if step is None else step
    dtype = resolve_load_dtype(dtype, device, lambda: count_parameters(ref, step, settings), settings)
    if ref.kind in ("zoo", "series"):
        assert ref.path is not None
        manifest = _zoo_manifest(ref) if ref.kind == "zoo" else read_manifest(ref.path)
        roots = (settings or get_settings()).allowed_roots
        if state is None:
            state = load_series_state_dict(ref.path, step, manifest, roots=roots)
        if reuse is not None and reuse.ref == ref and reuse.dtype == dtype:
            model = reuse.model
        else:
            model = _build_series_model(manifest, device, dtype)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelLoadError(
                f"{ref.spec} step {step}: weights do not fit the manifest's config: {exc}"
            ) from exc
        model.eval()
        return LoadedModel(
            ref,
            step,
            model,
            causal=True,
            task=manifest.task or None,
            family="hooked_transformer",
            dtype=dtype,
        )

    from phasescope.models import hf as hf_models

    if step not in steps:
        from phasescope.errors import CheckpointNotFound

        raise CheckpointNotFound(
            f"{ref.spec} has no checkpoint at step {step}", field="checkpoints", choices=steps
        )
    if ref.kind == "tl":
        loaded = hf_models.load_tl_pretrained(
            ref.name, None if steps == [hf_models.FINAL_STEP] else step, device, dtype=dtype
        )
    elif ref.kind == "hub":
        from phasescope.models.hub import load_hub_checkpoint

        loaded = load_hub_checkpoint(ref.spec, step, device, settings, dtype=dtype)
    elif ref.kind == "hf_series":
        assert ref.path is not None
        loaded = hf_models.load_hf_trainer_checkpoint(
            ref.path, step, device, dtype=dtype, roots=(settings or get_settings()).allowed_roots
        )
    else:
        assert ref.path is not None
        loaded = hf_models.load_hf_directory(
            ref.path, device, dtype=dtype, roots=(settings or get_settings()).allowed_roots
        )
    loaded.model.eval()
    return LoadedModel(
        ref,
        step,
        loaded.model,
        causal=loaded.causal,
        tokenizer=loaded.tokenizer,
        family=loaded.family,
        has_lm_head=loaded.has_lm_head,
        dtype=dtype,
    )


class ModelCache:
    """Models kept in memory by a worker, least recently used evicted first.

    Consecutive checkpoints of one series reuse the architecture (only weights are swapped); the
    cache holds at most ``max_bytes`` of parameters. Entries are keyed by model string and load dtype
    ("auto" resolved), so a bfloat16 request never gets a float32 model, nor the other way round.

    With ``prefetch``, ``prefetch(spec, step)`` reads a later checkpoint's weights in a background
    thread (``phasescope.models.prefetch``: one checkpoint ahead at most), and ``get`` of that step
    loads them from memory; ``last_prefetched`` says whether the last load did.
    """

    def __init__(self, max_bytes: int = 4 * 2**30, device: str = "cpu", prefetch: bool = False) -> None:
        from phasescope.models.prefetch import Prefetcher

        self.max_bytes = max_bytes
        self.device = device
        self.prefetcher = Prefetcher() if prefetch else None
        self.last_prefetched = False
        self._models: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._n_params: dict[tuple[str, int], int | None] = {}

    def prefetch(self, spec: str, step: int, settings: Settings | None = None) -> bool:
        """Start reading ``spec`` at ``step`` ahead (dropping any other read ahead); True when it is read.

        A no-op (False) without ``prefetch``, for model kinds that are not read ahead, and for a step
        this cache already holds.
        """
        if self.prefetcher is None:
            return False
        if any(k[0] == spec and m.step == step for k, m in self._models.items()):
            return False
        return self.prefetcher.start(spec, step, settings)

    def close(self) -> None:
        """Drop any weights read ahead and stop the prefetch thread."""
        if self.prefetcher is not None:
            self.prefetcher.close()

    @staticmethod
    def _size(loaded: LoadedModel) -> int:
        return sum(p.numel() * p.element_size() for p in loaded.model.parameters())

    def discard(self, spec: str) -> None:
        """Forget a model, e.g. because its files changed on disk since it was loaded."""
        for key in [k for k in self._models if k[0] == spec]:
            del self._models[key]

    def get(self, spec: str, step: int, settings: Settings | None = None, dtype: str = "auto") -> LoadedModel:
        """The model ``spec`` at ``step``, loaded in ``dtype`` (see ``load_model``)."""
        from phasescope.models.dtype import count_parameters, resolve_load_dtype

        def n_params() -> int | None:  # only "auto" on a GPU asks, once per checkpoint
            if (spec, step) not in self._n_params:
                self._n_params[(spec, step)] = count_parameters(
                    parse_model_spec(spec, settings), step, settings
                )
            return self._n_params[(spec, step)]

        key = (spec, resolve_load_dtype(dtype, self.device, n_params, settings))
        previous = self._models.pop(key, None)
        if previous is not None and previous.step == step:
            self._models[key] = previous
            self.last_prefetched = False
            return previous
        reuse = previous if previous is not None and previous.ref.kind in ("zoo", "series") else None
        # Weights read ahead, when their files still match (else None: the file is read here).
        state = self.prefetcher.take(spec, step, settings) if self.prefetcher is not None else None
        self.last_prefetched = state is not None
        loaded = load_model(spec, step, self.device, settings, reuse=reuse, dtype=key[1], state=state)
        del state  # the model holds its own copy now
        self._models[key] = loaded
        while len(self._models) > 1 and sum(self._size(m) for m in self._models.values()) > self.max_bytes:
            self._models.popitem(last=False)
        return loaded


def list_models(settings: Settings | None = None) -> list[ModelInfo]:
    """The catalogue: zoo series (trained or not), series and HF directories under the model roots."""
    settings = settings or get_settings()
    from phasescope.zoo import ZOO, is_trained

    infos: list[ModelInfo] = []
    for name, spec in sorted(ZOO.items()):
        trained = is_trained(name)
        n = len(read_manifest(settings.zoo_dir / name).steps) if trained else None
        infos.append(ModelInfo(f"zoo:{name}", "zoo", spec.description, trained, n, {"trained": trained}))
    infos += _trained_zoo_variants(settings)
    seen = {settings.zoo_dir.resolve()}
    for root in settings.allowed_roots:
        if root in seen or not root.is_dir():
            continue
        seen.add(root)
        for child in sorted(root.iterdir()):
            if not child.is_dir():
                continue
            try:
                ref = parse_model_spec(str(child), settings)
                infos.append(
                    ModelInfo(str(child), ref.kind, "local", True, len(list_checkpoints(ref, settings)))
                )
            except (ModelNotFound, PathNotAllowed, ModelLoadError):
                continue
    return infos


def _trained_zoo_variants(settings: Settings) -> list[ModelInfo]:
    """The other seeds and schedules of the zoo's recipes that are trained (``zoo:induction-2l-seed3``)."""
    from phasescope.errors import InvalidRequest
    from phasescope.zoo import ZOO, is_trained
    from phasescope.zoo.variants import parse_series_name

    found = []
    children = sorted(settings.zoo_dir.iterdir()) if settings.zoo_dir.is_dir() else []
    for child in children:
        if child.name in ZOO or child.name.startswith(".") or not child.is_dir():
            continue
        try:
            variant = parse_series_name(child.name)
        except (ModelNotFound, InvalidRequest):
            continue
        if variant.name == child.name and is_trained(variant.name, settings):
            n = len(read_manifest(child).steps)
            details = {"trained": True, "seed": variant.seed, "every": variant.every}
            found.append(ModelInfo(variant.model, "zoo", variant.spec.description, True, n, details))
    return found
