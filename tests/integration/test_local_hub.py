"""tl: and hub: models through a local Hugging Face hub stand-in (tests/hub_server.py), offline.

The real TransformerLens → transformers → huggingface_hub code runs end to end: repositories are built
here (random-init models with the real Pythia-14m config, a tiny stanford-crfm GPT-2, an OLMo-style
Llama run), one branch per training step with different weights, and a tokenizer trained here with
``tokenizers``. huggingface_hub reads ``HF_ENDPOINT`` once, at import, so everything that talks to the
hub runs in a subprocess or a worker started with it in its environment.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hub_server import ACCEPTED_TOKEN, LocalHub
from tests.integration.service import REPO, WorkerProcess, http, wait_for

PYTHIA = "EleutherAI/pythia-14m"
CRFM = "stanford-crfm/alias-gpt2-small-x21"  # a name TransformerLens lists, with checkpoint-<n> branches
OLMO_STYLE = "example-org/olmo-style-run"
LLM360_STYLE = "example-org/amber-style-run"
OLMO_BRANCHES = {
    "stage1-step0-tokens0B": 0,
    "stage1-step1000-tokens4B": 1000,
    "stage1-step2000-tokens8B": 2000,
}


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["the cat sat on the mat while the dog ran after the cat", "attention heads change phase"] * 30
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    eot = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot)


def _write_revisions(
    repo: Path,
    config: Any,
    model_class: Any,
    branches: list[str],
    tokenizer: Any,
    bin_only: tuple[str, ...] = (),
) -> None:
    import torch

    for seed, branch in enumerate(branches):
        torch.manual_seed(seed)
        # fp16 as Pythia publishes its checkpoints; a quarter of the bytes to write and serve.
        model = model_class(config).to(torch.float16)
        model.save_pretrained(repo / branch)
        if branch in bin_only:
            # Older uploads hold only a pytorch_model.bin (transformers 5 writes safetensors only; its
            # reader takes .bin with weights_only=True).
            from safetensors.torch import load_file

            saved = repo / branch / "model.safetensors"
            torch.save(
                load_file(saved), repo / branch / "pytorch_model.bin"
            )  # the checkpoint's own key names
            saved.unlink()
        tokenizer.save_pretrained(repo / branch)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """The stand-in hub, serving every repository of this module (built once: ~10 s)."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    root = tmp_path_factory.mktemp("hub") / "repos"
    tokenizer = _tokenizer()
    # Pythia-14m's own config (its config.json on the hub): only the weights are random.
    pythia = GPTNeoXConfig(
        vocab_size=50304,
        hidden_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=512,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        use_parallel_residual=True,
        max_position_embeddings=2048,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=False,
    )
    _write_revisions(
        root / PYTHIA, pythia, GPTNeoXForCausalLM, ["step0", "step1000", "main"], tokenizer, ("step1000",)
    )
    # CRFM's config.json keeps GPT-2's old n_ctx field, which TransformerLens reads.
    gpt2 = GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=4,
        n_positions=128,
        n_ctx=128,
        vocab_size=len(tokenizer),
        bos_token_id=0,
        eos_token_id=0,
    )
    _write_revisions(root / CRFM, gpt2, GPT2LMHeadModel, ["checkpoint-0", "checkpoint-10", "main"], tokenizer)
    llama = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=0,
    )
    # A stage-2 branch restarts its step count: the rule leaves it out.
    olmo_branches = [*OLMO_BRANCHES, "stage2-ingredient1-step1000-tokens5B", "main"]
    _write_revisions(root / OLMO_STYLE, llama, LlamaForCausalLM, olmo_branches, tokenizer)
    for branch in ("ckpt_000", "ckpt_001", "ckpt_002", "main"):  # listed, never loaded
        (root / LLM360_STYLE / branch).mkdir(parents=True)
        (root / LLM360_STYLE / branch / "config.json").write_text(
            json.dumps({"model_type": "llama", "b": branch})
        )
    with LocalHub(root) as server:
        yield server


def _hub_env(hub: LocalHub, cache: Path, data_dir: Path, token: str | None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PHASESCOPE_", "HF_")) and k != "REDIS_URL"
    }
    env.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf-home"))
    env.update(PHASESCOPE_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def _run(script: str, env: dict[str, str], timeout: float = 600) -> Any:
    """Run ``script`` in a fresh interpreter; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


_LOAD_SCRIPT = """
import json, sys, torch
from safetensors.torch import load_file
from phasescope.models.hub import revision_identity
from phasescope.models.loading import list_checkpoints, load_model

root = {root!r}
only_pythia = {only_pythia!r}

def same(a, b):
    return bool(torch.equal(a.detach().float().cpu(), b.float()))

def saved_weights(folder):
    try:
        return load_file(f"{{root}}/{{folder}}/model.safetensors")
    except FileNotFoundError:
        return torch.load(f"{{root}}/{{folder}}/pytorch_model.bin", weights_only=True)

out = {{"lists": {{}}, "identity": {{}}, "weights": {{}}}}
for spec in ("hub:{olmo}", "hub:{amber}", "hub:{pythia}"):
    out["lists"][spec] = list_checkpoints(spec)
out["identity"]["tl:pythia-14m"] = revision_identity("tl:pythia-14m", [0, 1000])
out["identity"]["hub:{olmo}"] = revision_identity("hub:{olmo}", [0, 1000, 2000])
cases = [
    ("tl:pythia-14m", 0, "{pythia}/step0", "gpt_neox.embed_in.weight", "embed_out.weight"),
    ("tl:pythia-14m", 1000, "{pythia}/step1000", "gpt_neox.embed_in.weight", "embed_out.weight"),
    ("tl:{crfm}", 10, "{crfm}/checkpoint-10", "transformer.wte.weight", "transformer.wpe.weight"),
    ("hub:{olmo}", 1000, "{olmo}/stage1-step1000-tokens4B", "model.embed_tokens.weight", "lm_head.weight"),
]
for spec, step, folder, embed, other in cases[:2] if only_pythia else cases:
    loaded = load_model(spec, step)
    saved = saved_weights(folder)
    second = loaded.model.W_U.T if other != "transformer.wpe.weight" else loaded.model.W_pos
    out["weights"][f"{{spec}}@{{step}}"] = {{
        "embed": same(loaded.model.W_E, saved[embed]), "second": same(second, saved[other]),
        "family": loaded.family, "step": loaded.step,
    }}
    main = saved_weights(folder.rsplit("/", 1)[0] + "/main")
    out["weights"][f"{{spec}}@{{step}}"]["other_steps_differ"] = not same(loaded.model.W_E, main[embed])
# What a worker does once the step is measured: the revision leaves the cache.
from huggingface_hub import scan_cache_dir
from phasescope.models.hub import release_checkpoint

def cached(repo):
    return sorted(r.commit_hash for c in scan_cache_dir().repos if c.repo_id == repo for r in c.revisions
                  if any(f.file_name.endswith((".safetensors", ".bin")) for f in r.files))

before = cached("{pythia}")
freed = release_checkpoint("tl:pythia-14m", 0)
out["eviction"] = {{"before": before, "after": cached("{pythia}"), "freed": freed}}
print(json.dumps(out))
"""


@pytest.mark.parametrize("token", [None, ACCEPTED_TOKEN], ids=["no-HF_TOKEN", "HF_TOKEN"])
def test_tl_and_hub_checkpoints_load_their_own_revision(
    hub: LocalHub, tmp_path: Path, token: str | None
) -> None:
    """Pythia and stanford-crfm steps (tl:) and an OLMo-style run (hub:) load, each with its branch's weights."""
    before = len(hub.requests)
    # With a token, Pythia is enough: the header is what differs, and Pythia is what TransformerLens broke.
    script = _LOAD_SCRIPT.format(
        root=str(hub.root),
        pythia=PYTHIA,
        crfm=CRFM,
        olmo=OLMO_STYLE,
        amber=LLM360_STYLE,
        only_pythia=bool(token),
    )
    out = _run(script, _hub_env(hub, tmp_path / "hf-cache", tmp_path / "data", token))

    # OLMo-, LLM360- and Pythia-style branch names; main is not a step when steps exist.
    assert out["lists"] == {
        f"hub:{OLMO_STYLE}": [0, 1000, 2000],
        f"hub:{LLM360_STYLE}": [0, 1, 2],
        f"hub:{PYTHIA}": [0, 1000],
    }
    assert out["identity"]["tl:pythia-14m"] == {
        "0": hub.commit(PYTHIA, "step0"),
        "1000": hub.commit(PYTHIA, "step1000"),
    }
    assert out["identity"][f"hub:{OLMO_STYLE}"] == {
        str(s): hub.commit(OLMO_STYLE, b) for b, s in OLMO_BRANCHES.items()
    }
    for case, result in out["weights"].items():
        assert result["embed"] and result["second"], (
            f"{case} did not carry its own revision's weights: {result}"
        )
        assert result["other_steps_differ"], case
    assert out["weights"]["tl:pythia-14m@0"]["family"] == "gpt-neox"
    if token is None:
        assert out["weights"][f"hub:{OLMO_STYLE}@1000"]["family"] == "llama"
        assert {f"tl:{CRFM}@10", f"hub:{OLMO_STYLE}@1000"} <= set(out["weights"])
    step0, step1000 = hub.commit(PYTHIA, "step0"), hub.commit(PYTHIA, "step1000")
    assert out["eviction"]["before"] == sorted([step0, step1000])
    assert out["eviction"]["after"] == [step1000] and out["eviction"]["freed"] > 0

    auth = {a for _, _, a in hub.requests[before:]}
    # Without a token no Authorization header is sent at all (not an empty "Bearer "); with one, always it.
    assert auth == ({None} if token is None else {f"Bearer {token}"})
    weight_gets = [
        p for m, p, _ in hub.requests[before:] if m == "GET" and p.endswith((".safetensors", ".bin"))
    ]
    assert len(weight_gets) == (2 if token else 4)  # each revision downloaded once, by commit
    assert not [
        p for _, p, _ in hub.requests[before:] if "discussions" in p
    ]  # no safetensors-conversion PR asked
    assert all(p.split("/resolve/")[1].split("/")[0] in _commits(hub) for p in weight_gets)


def _commits(hub: LocalHub) -> set[str]:
    return {hub.commit(repo, branch) for repo, branches in hub._repos.items() for branch in branches}


def _cached_weight_revisions(cache: Path) -> dict[str, int]:
    """Per repository, how many revisions in the HF cache hold weights."""
    from huggingface_hub import scan_cache_dir

    if not cache.is_dir():
        return {}
    return {
        repo.repo_id: sum(
            1 for rev in repo.revisions if any(f.file_name.endswith(".safetensors") for f in rev.files)
        )
        for repo in scan_cache_dir(cache).repos
    }


def _finish(url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(f"{url}/api/v1/analyses", json=body)
    assert response.status_code in (200, 201, 202), response.text
    aid = response.json()["id"]

    def done() -> dict[str, Any] | None:
        status = http.get(f"{url}/api/v1/analyses/{aid}").json()
        assert status["status"] != "failed", status
        return status if status["status"] == "finished" else None

    wait_for(done, 600, f"analysis {aid}", interval=0.5)
    return {"id": aid, "table": http.get(f"{url}/api/v1/analyses/{aid}/results").json()}


def test_worker_sweep_evicts_measured_revisions(
    hub: LocalHub, start_stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 3-revision hub: sweep by a real worker leaves at most one revision cached; with the keep setting, all 3."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    cache = tmp_path / "hf-cache"
    env = _hub_env(hub, cache, tmp_path / "unused", None)
    hf_env = {k: env[k] for k in ("HF_ENDPOINT", "HF_HUB_CACHE", "HF_HOME")}
    for key, value in hf_env.items():
        monkeypatch.setenv(key, value)
    stack = start_stack(workers=1)
    spec = f"hub:{OLMO_STYLE}"
    inputs = {"n_prompts": 2, "seq_len": 16}

    checkpoints = http.get(f"{stack.url}/api/v1/models/{spec}/checkpoints").json()
    assert checkpoints["kind"] == "hub" and checkpoints["checkpoints"] == [0, 1000, 2000]
    first = _finish(stack.url, {"model": spec, "measures": ["entropy"], "inputs": inputs})
    assert _cached_weight_revisions(cache).get(OLMO_STYLE, 0) <= 1
    assert hub.count("GET", f"{OLMO_STYLE}/resolve/") >= 3  # the three revisions were fetched
    data = first["table"]["data"]
    by_step: dict[int, list[float]] = {}
    for step, value in zip(data["checkpoint"], data["value"], strict=True):
        by_step.setdefault(step, []).append(value)
    assert sorted(by_step) == [0, 1000, 2000]
    assert by_step[0] != by_step[1000] != by_step[2000]  # each step measured its own weights

    # A worker told to keep revisions, with a cache of its own.
    stack.workers[0].stop()
    kept = tmp_path / "hf-cache-kept"
    keep_env = {**stack.env, "HF_HUB_CACHE": str(kept), "PHASESCOPE_HUB_KEEP_REVISIONS": "true"}
    keeper = WorkerProcess(keep_env, stack.log_dir, "keeper").start()
    stack.workers.append(keeper)
    _finish(stack.url, {"model": spec, "measures": ["entropy"], "inputs": {**inputs, "seed": 1}})
    assert _cached_weight_revisions(kept) == {OLMO_STYLE: 3}

    # Pickled TransformerLens models are refused at the API, before any hub call.
    n = hub.count(contains="NeelNanda")
    refused = http.get(f"{stack.url}/api/v1/models/tl:NeelNanda/SoLU_1L512W_C4_Code/checkpoints")
    assert refused.status_code == 422 and refused.json()["error"] == "model_load_error"
    assert "PHASESCOPE_ALLOW_PICKLED_CHECKPOINTS" in refused.json()["detail"]
    posted = http.post(f"{stack.url}/api/v1/analyses", json={"model": "tl:NeelNanda/SoLU_1L512W_C4_Code"})
    assert posted.status_code == 422
    assert hub.count(contains="NeelNanda") == n == 0


def test_pickled_models_refused_in_worker_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """load_tl_pretrained (what a worker calls) refuses NeelNanda .pth models unless the setting allows them."""
    from phasescope.config import Settings, get_settings
    from phasescope.errors import ModelLoadError
    from phasescope.models.hf import load_tl_pretrained
    from phasescope.models.loading import parse_model_spec

    monkeypatch.setenv("PHASESCOPE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PHASESCOPE_ALLOW_PICKLED_CHECKPOINTS", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(ModelLoadError, match="pickles"):
            load_tl_pretrained("NeelNanda/GELU_1L512W_C4_Code", None, "cpu")
        with pytest.raises(ModelLoadError, match="pickles"):
            parse_model_spec("tl:gelu-1l")  # an alias of the same model
        allowed = Settings(allow_pickled_checkpoints=True)
        assert parse_model_spec("tl:gelu-1l", allowed).kind == "tl"
        assert (
            parse_model_spec("tl:pythia-14m").kind == "tl"
        )  # safetensors/transformers models are not affected
    finally:
        get_settings.cache_clear()


_SILENT_SCRIPT = """
import json, time
from phasescope.errors import HubUnavailable
from phasescope.models.hub import revision_identity
t = time.monotonic()
try:
    revision_identity("hub:example-org/silent", [0])
    out = "answered"
except HubUnavailable as exc:
    out = exc.code
print(json.dumps({"out": out, "seconds": time.monotonic() - t}))
"""


def test_hub_failures_are_bounded_and_remembered(
    hub: LocalHub, start_stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing hub costs one request per failure interval, not one per GET; a silent one a bounded wait."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    stack = start_stack(workers=0, PHASESCOPE_ALLOW_PICKLED_CHECKPOINTS="true")
    hub.fail_status = 503
    try:
        for model in ("tl:NeelNanda/SoLU_1L512W_C4_Code", f"hub:{OLMO_STYLE}"):
            n = hub.count(contains="/api/models/")  # not huggingface_hub's own once-a-day registry fetch
            answers = [http.get(f"{stack.url}/api/v1/models/{model}/checkpoints") for _ in range(3)]
            assert [a.status_code for a in answers] == [503] * 3, answers[0].text
            body = answers[0].json()
            assert body["error"] == "hub_unavailable"
            assert "127.0.0.1" not in answers[0].text and "Traceback" not in answers[0].text
            assert hub.count(contains="/api/models/") - n == 1, hub.requests[-4:]
    finally:
        hub.fail_status = None

    # A repository the hub does not have, and a string that is no repository id: 404s that say so.
    missing = http.get(f"{stack.url}/api/v1/models/hub:example-org/no-such-run/checkpoints")
    assert missing.status_code == 404 and missing.json()["error"] == "model_not_found"
    malformed = http.get(f"{stack.url}/api/v1/models/hub:..%2Fetc/checkpoints")
    assert malformed.status_code == 404 and "hub:<org>/<name>" in malformed.json()["detail"]

    # A hub that accepts the connection and never answers: the call gives up after hub_timeout_s.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        env = _hub_env(hub, tmp_path / "hf-cache-2", tmp_path / "data-2", None)
        env.update(HF_ENDPOINT=f"http://127.0.0.1:{silent.getsockname()[1]}", PHASESCOPE_HUB_TIMEOUT_S="1")
        out = _run(_SILENT_SCRIPT, env, timeout=120)
    assert out["out"] == "hub_unavailable"
    assert out["seconds"] < 60


_EVICTED_SCRIPT = """
import json
from phasescope.models.hub import checkpoint_revision, load_from_snapshot, release_checkpoint

spec = "hub:{olmo}"
repo, _, commit = checkpoint_revision(spec, 1000)
calls = []

def load(path):
    calls.append(path)
    if len(calls) == 1:
        release_checkpoint(spec, 1000)  # another worker sharing the cache measured this step and evicts it
    return json.loads((path / "config.json").read_text())["hidden_size"]

out = {{"value": load_from_snapshot(repo, commit, load), "calls": len(calls)}}

def broken(path):
    calls.append(path)
    raise OSError("not an eviction")

calls.clear()
try:
    load_from_snapshot(repo, commit, broken)
except OSError:
    out["broken_calls"] = len(calls)
print(json.dumps(out))
"""


def test_a_revision_evicted_by_another_worker_is_fetched_again(hub: LocalHub, tmp_path: Path) -> None:
    """A revision deleted between its download and its load is downloaded again, once; other failures raise."""
    before = hub.count("GET", f"{OLMO_STYLE}/resolve/")
    out = _run(
        _EVICTED_SCRIPT.format(olmo=OLMO_STYLE), _hub_env(hub, tmp_path / "hf-cache", tmp_path / "data", None)
    )
    assert out == {"value": 64, "calls": 2, "broken_calls": 1}
    assert hub.count("GET", f"{OLMO_STYLE}/resolve/") - before >= 2 * 4  # every file fetched twice
