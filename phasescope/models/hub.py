"""Models on the Hugging Face hub whose training checkpoints are published as branches.

``hub:<org>/<name>`` names any hub repository; ``tl:<name>`` models with training checkpoints
(Pythia, stanford-crfm GPT-2) live on the hub the same way. A checkpoint is a branch, and the step is
read from the branch name by one rule (``branch_step``):

=================================  =====================  ===============================
branch name                        published by           step
=================================  =====================  ===============================
``step<n>``                        Pythia                 n
``[stage1-]step<n>[-tokens<m>B]``  OLMo 1 and 2           n (other stages are not listed)
``ckpt_<n>``                       LLM360 (Amber, ...)    n (their checkpoint number)
``checkpoint-<n>``                 Trainer pushes, CRFM   n
=================================  =====================  ===============================

``main`` (the published model) is listed only when no branch names a step: then it is the model's
single checkpoint, step ``FINAL_STEP`` (0). A repository with checkpoint branches usually has its
final step on ``main`` too; the step branch already names those weights. Two branches naming the same
step: the one sorting first by name is used.

The branch list comes from one ``/api/models/<repo>/refs`` call (what ``HfApi.list_repo_refs`` asks),
bounded by ``Settings.hub_timeout_s`` and kept for ``Settings.hub_refs_ttl_s`` in the process; a failure
is kept for ``Settings.hub_failure_ttl_s``, so an unreachable hub costs one bounded call per interval,
not one per request. The hub address, cache and credential are huggingface_hub's own ``HF_ENDPOINT``,
``HF_HUB_CACHE`` (or ``HF_HOME``) and ``HF_TOKEN``.

Everything here except ``load_hub_checkpoint`` works without torch: the API resolves ``hub:`` models
and the weights' identity (``revision_identity``) with it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from phasescope.config import Settings, get_settings
from phasescope.errors import CheckpointNotFound, HubUnavailable, ModelLoadError, ModelNotFound

if TYPE_CHECKING:
    from phasescope.models.hf import LoadedHF

__all__ = [
    "FINAL_STEP",
    "HubCheckpoint",
    "branch_step",
    "checkpoint_revision",
    "clear_hub_cache",
    "download_revision",
    "hub_checkpoints",
    "hub_repo_files",
    "load_from_snapshot",
    "load_hub_checkpoint",
    "parse_repo_id",
    "release_checkpoint",
    "repo_branches",
    "revision_identity",
    "tl_hub_revision",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

FINAL_STEP = 0
"""The single checkpoint of a repository without step branches: ``main``, the weights as published."""

_BRANCH_RULES = (
    re.compile(r"(?:stage1-)?step(\d+)(?:-tokens\d+B)?"),
    re.compile(r"ckpt_(\d+)"),
    re.compile(r"checkpoint-(\d+)"),
)
# Hub repository ids: a user or organisation and a name, letters, digits, "-", "_", "." (no "..").
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
# Files a hub checkpoint needs: config, weights as safetensors, tokenizer. Pickled weights are fetched
# only when a revision has no safetensors (transformers reads them with weights_only=True).
_CHECKPOINT_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken")
_PICKLED_WEIGHTS = ("pytorch_model*.bin",)


@dataclass(frozen=True)
class HubCheckpoint:
    """One checkpoint of a hub repository: its step, branch and the commit the branch points at."""

    step: int
    branch: str
    commit: str


def branch_step(branch: str) -> int | None:
    """The training step a branch name stands for, or None (see the module docstring for the rule).

    >>> [branch_step(b) for b in ("step1000", "stage1-step5000-tokens21B", "ckpt_042", "checkpoint-50")]
    [1000, 5000, 42, 50]
    >>> branch_step("main") is None and branch_step("stage2-ingredient1-step1000-tokens5B") is None
    True
    """
    for rule in _BRANCH_RULES:
        match = rule.fullmatch(branch)
        if match:
            return int(match.group(1))
    return None


def parse_repo_id(name: str, spec: str | None = None) -> str:
    """Check a hub repository id (``org/name``) without calling the hub.

    Raises:
        ModelNotFound: not of the form ``org/name`` with letters, digits, ``-``, ``_`` and ``.``.
    """
    if not _REPO_ID.fullmatch(name) or ".." in name:
        raise ModelNotFound(
            f"{spec or name!r} does not name a hub repository: write hub:<org>/<name>, e.g. hub:EleutherAI/pythia-70m",
            field="model",
        )
    return name


# --- the branch list, cached in the process ---------------------------------------------------

_LOCK = threading.Lock()
# (endpoint, what, repo) -> (monotonic expiry, value or the PhasescopeError to raise again)
_MEMO: dict[tuple[str, str, str], tuple[float, Any]] = {}


def clear_hub_cache() -> None:
    """Forget every remembered branch list, file list and failure (tests; a user's retry after a fix)."""
    with _LOCK:
        _MEMO.clear()


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _hub_get_json(repo_id: str, suffix: str, settings: Settings) -> Any:
    """GET ``<endpoint>/api/models/<repo_id><suffix>`` as huggingface_hub would, but bounded in time.

    ``HfApi`` calls have no timeout of their own (its shared client waits forever), and the API calls
    this on requests nobody authenticated, so the bound is ours.
    """
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    url = f"{_endpoint()}/api/models/{repo_id}{suffix}"
    spec = f"hub:{repo_id}"
    try:
        response = get_session().get(url, headers=build_hf_headers(), timeout=settings.hub_timeout_s)
        hf_raise_for_status(response)
        return response.json()
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        status = getattr(exc.response, "status_code", None) if hasattr(exc, "response") else None
        if status in (401, 403):
            raise ModelLoadError(
                f"the hub refuses access to {repo_id}: it is private or gated; accept its terms on the hub and "
                "set HF_TOKEN for the workers and the API",
                field="model",
                model=spec,
            ) from exc
        raise ModelNotFound(f"the hub has no repository {repo_id}", field="model", model=spec) from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise ModelLoadError(
                f"the hub refuses access to {repo_id} (HTTP {status}); set HF_TOKEN to a token that may read it",
                field="model",
                model=spec,
            ) from exc
        raise HubUnavailable(
            f"the Hugging Face hub answered HTTP {status} for {repo_id}; try again later", model=spec
        ) from exc
    except (OSError, ValueError) as exc:  # httpx errors are OSErrors here; ValueError: not JSON
        raise HubUnavailable(
            f"the Hugging Face hub could not be reached for {repo_id} within {settings.hub_timeout_s:g} s; "
            "try again later, or check HF_ENDPOINT and the network",
            model=spec,
        ) from exc
    except Exception as exc:  # httpx2's transport errors do not all derive from OSError
        if type(exc).__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore"):
            raise
        raise HubUnavailable(
            f"the Hugging Face hub could not be reached for {repo_id} within {settings.hub_timeout_s:g} s; "
            "try again later, or check HF_ENDPOINT and the network",
            model=spec,
        ) from exc


def _remembered(what: str, repo_id: str, settings: Settings, fetch: Any) -> Any:
    key = (_endpoint(), what, repo_id)
    now = time.monotonic()
    with _LOCK:
        hit = _MEMO.get(key)
    if hit is not None and hit[0] > now:
        if isinstance(hit[1], Exception):
            raise hit[1]
        return hit[1]
    try:
        value = fetch()
    except (ModelNotFound, ModelLoadError, HubUnavailable) as exc:
        with _LOCK:
            _MEMO[key] = (now + settings.hub_failure_ttl_s, exc)
        raise
    with _LOCK:
        _MEMO[key] = (now + settings.hub_refs_ttl_s, value)
    return value


def repo_branches(repo_id: str, settings: Settings | None = None) -> dict[str, str]:
    """Every branch of a hub model repository and the commit it points at (one bounded hub call).

    Raises:
        ModelNotFound: no such repository. ModelLoadError: private or gated without a token.
        HubUnavailable: the hub did not answer within ``Settings.hub_timeout_s``, or answered an error.
    """
    settings = settings or get_settings()

    def fetch() -> dict[str, str]:
        data = _hub_get_json(repo_id, "/refs", settings)
        return {item["name"]: item["targetCommit"] for item in data.get("branches", [])}

    return dict(_remembered("refs", repo_id, settings, fetch))


def hub_repo_files(repo_id: str, settings: Settings | None = None) -> list[str]:
    """The file names on a repository's ``main`` (one bounded hub call, remembered like the branches)."""
    settings = settings or get_settings()

    def fetch() -> list[str]:
        data = _hub_get_json(repo_id, "", settings)
        return [s["rfilename"] for s in data.get("siblings", [])]

    return list(_remembered("files", repo_id, settings, fetch))


def hub_checkpoints(repo_id: str, settings: Settings | None = None) -> list[HubCheckpoint]:
    """The checkpoints of a hub repository, by step ascending (the rule is in the module docstring)."""
    branches = repo_branches(repo_id, settings)
    by_step: dict[int, HubCheckpoint] = {}
    for branch in sorted(branches):
        step = branch_step(branch)
        if step is not None and step not in by_step:
            by_step[step] = HubCheckpoint(step, branch, branches[branch])
    if not by_step:
        if "main" not in branches:
            raise ModelNotFound(
                f"hub:{repo_id} has neither checkpoint branches (step<n>, checkpoint-<n>, ...) nor a main branch",
                field="model",
            )
        return [HubCheckpoint(FINAL_STEP, "main", branches["main"])]
    return [by_step[s] for s in sorted(by_step)]


# --- tl: models on the hub ----------------------------------------------------------------------

# TransformerLens names that are not hub repositories (TL's NON_HF_HOSTED_MODEL_NAMES).
_TL_NOT_ON_HUB = ("llama-7b-hf", "llama-13b-hf", "llama-30b-hf", "llama-65b-hf")


def tl_hub_revision(official: str, step: int | None) -> tuple[str, str]:
    """The hub repository and branch TransformerLens reads for a model at a step.

    Pythia's checkpoints are branches ``step<n>``, stanford-crfm's ``checkpoint-<n>``
    (TransformerLens's ``get_pretrained_state_dict``); every other model, NeelNanda's ``.pth``
    checkpoints included, is read from ``main``.

    Args:
        official: TransformerLens's official name (``tl_catalog.resolve_name``).
        step: a training step, or None for the published weights.
    """
    if official in _TL_NOT_ON_HUB:
        raise ModelLoadError(
            f"tl:{official} is not hosted on the Hugging Face hub; TransformerLens needs its weights passed in",
            field="model",
            model=f"tl:{official}",
        )
    if step is not None and official.startswith("EleutherAI/pythia"):
        return official, f"step{step}"
    if step is not None and official.startswith("stanford-crfm/"):
        return official, f"checkpoint-{step}"
    return official, "main"


def checkpoint_revision(spec: str, step: int, settings: Settings | None = None) -> tuple[str, str, str]:
    """The hub repository, branch and commit a ``tl:`` or ``hub:`` model's checkpoint is read from.

    Raises:
        CheckpointNotFound: the repository has no such step. ModelNotFound, ModelLoadError,
        HubUnavailable: as ``repo_branches``.
    """
    return _revisions(spec, [step], settings or get_settings())[step]


def _revisions(spec: str, steps: list[int], settings: Settings) -> dict[int, tuple[str, str, str]]:
    spec = spec.strip()
    if spec.startswith("hub:"):
        repo_id = parse_repo_id(spec[4:], spec)
        known = {c.step: c for c in hub_checkpoints(repo_id, settings)}
        missing = [s for s in steps if s not in known]
        if missing:
            raise CheckpointNotFound(
                f"{spec} has no checkpoint at step {missing[0]}",
                field="checkpoints",
                choices=sorted(known),
                model=spec,
                checkpoint=missing[0],
            )
        return {s: (repo_id, known[s].branch, known[s].commit) for s in steps}
    if spec.startswith("tl:"):
        from phasescope.models import tl_catalog

        official = tl_catalog.resolve_name(spec[3:])
        checkpointed = bool(tl_catalog.catalog()["checkpoints"].get(official))
        out = {}
        branches: dict[str, str] | None = None
        for step in steps:
            repo_id, branch = tl_hub_revision(official, step if checkpointed else None)
            branches = branches if branches is not None else repo_branches(repo_id, settings)
            if branch not in branches:
                raise CheckpointNotFound(
                    f"{spec}: the hub repository {repo_id} has no branch {branch}",
                    field="checkpoints",
                    model=spec,
                    checkpoint=step,
                )
            out[step] = (repo_id, branch, branches[branch])
        return out
    raise ModelNotFound(f"{spec!r} is not a hub model (tl:<name> or hub:<org>/<name>)", field="model")


def revision_identity(spec: str, steps: list[int], settings: Settings | None = None) -> dict[int, str]:
    """The hub commit each step of a ``tl:`` or ``hub:`` model is read from: its weights' identity.

    One branch list covers every step; it is remembered for ``Settings.hub_refs_ttl_s``. A branch that
    moves to a new commit (weights re-uploaded) gives a new identity once that time has passed. Imports
    no torch.

    Args:
        spec: ``tl:<name>`` or ``hub:<org>/<name>``.
        steps: training steps from ``phasescope.models.loading.list_checkpoints``.
        settings: for the hub timeout and cache times.

    Returns:
        ``{step: 40-hex commit sha}``.

    Raises:
        CheckpointNotFound, ModelNotFound, ModelLoadError, HubUnavailable: see ``repo_branches``.
    """
    settings = settings or get_settings()
    return {step: commit for step, (_, _, commit) in _revisions(spec, list(steps), settings).items()}


# --- downloading, loading and evicting revisions ---------------------------------------------------


def download_revision(repo_id: str, commit: str, settings: Settings | None = None) -> Path:
    """Fetch the files of one revision a checkpoint needs into the Hugging Face cache.

    Safetensors weights, configs and tokenizer files; pickled ``pytorch_model*.bin`` only for a revision
    without safetensors (older uploads). Downloading by commit, not branch, keeps what is read
    equal to what ``revision_identity`` named.

    Returns:
        The snapshot directory (``<HF_HUB_CACHE>/models--<org>--<name>/snapshots/<commit>``).
    """
    settings = settings or get_settings()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        files = _hub_get_json(repo_id, f"/revision/{commit}", settings).get("siblings", [])
        names = [f["rfilename"] for f in files]
        patterns = list(_CHECKPOINT_FILES)
        if not any(n.endswith(".safetensors") for n in names):
            patterns += _PICKLED_WEIGHTS
        path = snapshot_download(
            repo_id, revision=commit, allow_patterns=patterns, etag_timeout=settings.hub_timeout_s
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise HubUnavailable(
            f"could not download {repo_id} at {commit[:12]} from the hub; try again later",
            model=f"hub:{repo_id}",
        ) from exc
    return Path(path)


def load_hub_checkpoint(
    spec: str, step: int, device: str, settings: Settings | None = None, dtype: str = "float32"
) -> LoadedHF:
    """Download a ``hub:`` model's checkpoint and load it like a local Hugging Face directory.

    The revision's snapshot goes through the same family conversion as a local directory
    (``hf_models.load_hf_directory``), so the same families load, with the same checks.
    """
    settings = settings or get_settings()
    repo_id, _, commit = checkpoint_revision(spec, step, settings)
    from phasescope.models.hf import load_hf_directory

    return load_from_snapshot(
        repo_id, commit, lambda path: load_hf_directory(path, device, dtype=dtype), settings
    )


def load_from_snapshot(
    repo_id: str, commit: str, load: Callable[[Path], _T], settings: Settings | None = None
) -> _T:
    """``load(snapshot directory)`` for one revision, fetched first; fetched again once if it vanished.

    Workers sharing a cache evict revisions they have measured (``release_checkpoint``); another worker
    may be between downloading the same revision and opening its files. Once opened, a file survives
    its deletion; before, the load fails, and the revision is fetched again and loaded once more.
    """
    for attempt in (1, 2):
        path = download_revision(repo_id, commit, settings)
        try:
            return load(path)
        except (ModelLoadError, OSError):
            if attempt == 2 or _snapshot_complete(path):
                raise  # not an eviction: the files are there, so the failure is the load's own
            _log.warning("%s at %s was evicted while loading; fetching it again", repo_id, commit[:12])
    raise AssertionError("unreachable")


def _snapshot_complete(path: Path) -> bool:
    # Snapshot entries are links into blobs/: an evicted revision loses the folder or the blobs.
    return path.is_dir() and all(p.exists() for p in path.rglob("*"))


def release_checkpoint(spec: str, step: int, settings: Settings | None = None) -> int:
    """Delete a measured checkpoint's revision from the Hugging Face cache, unless kept.

    Called by a worker once a checkpoint's results are written. With ``Settings.hub_keep_revisions``
    (or for a model that is not on the hub) nothing is deleted. The weights already in memory stay
    usable; another worker needing the revision again downloads it again.

    Returns:
        Bytes freed (0 when nothing was deleted).
    """
    settings = settings or get_settings()
    if settings.hub_keep_revisions or not spec.strip().startswith(("tl:", "hub:")):
        return 0
    try:
        repo_id, _, commit = checkpoint_revision(spec, step, settings)
    except (ModelNotFound, CheckpointNotFound, ModelLoadError, HubUnavailable):
        return 0
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return 0
    hashes = [
        rev.commit_hash
        for repo in cache.repos
        if repo.repo_id == repo_id and repo.repo_type == "model"
        for rev in repo.revisions
        if rev.commit_hash == commit
    ]
    if not hashes:
        return 0
    strategy = cache.delete_revisions(*hashes)
    try:
        strategy.execute()
    except OSError:  # another worker deleted it first, or a read-only cache: the result is stored anyway
        _log.warning(
            "could not delete %s at %s from the Hugging Face cache", repo_id, commit[:12], exc_info=True
        )
        return 0
    return int(strategy.expected_freed_size)
