"""Text prompts for language models: windows of one token stream, framed the way each family expects.

The texts are tokenised without special tokens and joined into one stream, each text preceded by a
separator (the tokenizer's BOS, else its EOS; ``[SEP]`` for encoders in the family style). Prompts are
windows of that stream, and every prompt has exactly ``seq_len`` tokens, so nothing is padded and no
padded query row reaches the measures. Two styles (``InputSpec.prompt_style``):

- ``"raw"``: plain windows of ``seq_len`` tokens, cut at multiples of ``seq_len``. A window may start
  in the middle of a text, with no BOS, or on a separator.
- ``"family"`` (the default): a decoder whose TransformerLens config prepends BOS
  (``cfg.default_prepend_bos``, what ``model.to_tokens`` does) gets ``[BOS] + window``; an encoder
  gets ``[CLS] + window + [SEP]``, the single-segment input BERT-style models saw in training. The
  window is shortened by the tokens added, and a window never starts or ends on a separator (it moves
  one token on instead), so no prompt begins with two BOS or ends with two ``[SEP]``. A decoder that
  does not prepend BOS (GPT-NeoX/Pythia, Qwen, Phi, ... in TransformerLens 3.9) gets the window alone.

docs/measures.md ("Prompts") states the convention for users.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from phasescope.errors import InvalidRequest

__all__ = ["PromptFrame", "prompt_frame", "text_prompts"]

PromptStyle = Literal["family", "raw"]


@dataclass(frozen=True)
class PromptFrame:
    """The tokens put around every window, and the separator between texts in the stream.

    Attributes:
        prefix: token ids before each window (``(BOS,)``, ``(CLS,)`` or empty).
        suffix: token ids after each window (``(SEP,)`` or empty).
        separator: the token put before every text in the stream; None when the tokenizer has none.
        style: the ``InputSpec.prompt_style`` this frame was made for.
    """

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    separator: int | None
    style: PromptStyle

    @property
    def n_special(self) -> int:
        """Tokens of each prompt that are not text (prefix and suffix)."""
        return len(self.prefix) + len(self.suffix)


def _token_id(tokenizer: Any, name: str) -> int | None:
    # Asking a tokenizer for the id of a token it does not have logs an error in some transformers
    # versions: look at the token first.
    if getattr(tokenizer, name, None) is None:
        return None
    value = getattr(tokenizer, f"{name}_id", None)
    return None if value is None else int(value)


def prompt_frame(tokenizer: Any, *, causal: bool, prepend_bos: bool, style: PromptStyle) -> PromptFrame:
    """How prompts are framed for one model.

    Args:
        tokenizer: the model's Hugging Face tokenizer.
        causal: True for decoders, False for encoders (BERT-style).
        prepend_bos: the model's TransformerLens ``cfg.default_prepend_bos``.
        style: ``"family"`` or ``"raw"`` (see the module docstring).
    """
    bos = _token_id(tokenizer, "bos_token")
    separator = bos if bos is not None else _token_id(tokenizer, "eos_token")
    if style == "raw":
        return PromptFrame((), (), separator, style)
    if causal:
        return PromptFrame((bos,) if prepend_bos and bos is not None else (), (), separator, style)
    cls, sep = _token_id(tokenizer, "cls_token"), _token_id(tokenizer, "sep_token")
    if cls is None or sep is None:
        # An encoder tokenizer without [CLS]/[SEP] has no framing to reproduce.
        return PromptFrame((), (), separator, style)
    return PromptFrame((cls,), (sep,), sep, style)


def _stream(tokenizer: Any, texts: list[str], frame: PromptFrame) -> list[int]:
    """Every text's tokens, each text preceded by the frame's separator."""
    ids: list[int] = []
    for text in texts:
        tokens = [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
        if frame.style == "family" and not tokens:
            continue  # two separators in a row would leave a window nothing to start on
        if frame.separator is not None:
            ids.append(frame.separator)
        ids.extend(tokens)
    return ids


def _window_starts(stream: list[int], length: int, frame: PromptFrame) -> list[int]:
    """Start indices of non-overlapping windows of ``length`` tokens.

    Raw windows tile the stream from its start. Family windows skip forward while a window would
    start or end on a separator; in the stream no two separators touch, so this moves a window by at
    most a couple of tokens.
    """
    if frame.style == "raw":
        return [k * length for k in range(len(stream) // length)]
    sep = frame.separator
    starts, s = [], 0
    while s + length <= len(stream):
        if sep is not None and (stream[s] == sep or stream[s + length - 1] == sep):
            s += 1
            continue
        starts.append(s)
        s += length
    return starts


def text_prompts(
    tokenizer: Any, texts: list[str], frame: PromptFrame, n_prompts: int, seq_len: int, seed: int
) -> tuple[Tensor, str]:
    """``n_prompts`` prompts of exactly ``seq_len`` tokens from ``texts``.

    When the stream holds more windows than ``n_prompts``, the seed picks which (spread over the whole
    stream, in stream order); when it holds fewer, every window is used.

    Args:
        tokenizer: the model's Hugging Face tokenizer.
        texts: the texts to cut prompts from.
        frame: from :func:`prompt_frame`.
        n_prompts: prompts wanted (at most).
        seq_len: tokens per prompt, special tokens included.
        seed: chooses the windows.

    Returns:
        ``(tokens [prompt, seq_len], one line saying what the prompts are)``.

    Raises:
        InvalidRequest: the texts are too short for a single prompt.
    """
    length = seq_len - frame.n_special
    stream = _stream(tokenizer, texts, frame)
    candidates = _window_starts(stream, length, frame) if length >= 1 else []
    if not candidates:
        raise InvalidRequest(
            f"the texts hold {len(stream)} tokens, too few for one prompt of seq_len={seq_len}: give more text "
            "or a smaller seq_len",
            field="inputs.texts",
        )
    if len(candidates) >= n_prompts:
        # Spread the prompts over the whole stream, chosen by the seed, not just its beginning.
        gen = torch.Generator().manual_seed(seed)
        picked = torch.randperm(len(candidates), generator=gen)[:n_prompts].sort().values.tolist()
        starts = [candidates[i] for i in picked]
    else:
        starts = candidates
    rows = [list(frame.prefix) + stream[s : s + length] + list(frame.suffix) for s in starts]
    tokens = torch.tensor(rows, dtype=torch.long)  # (prompt, seq_len)
    framing = {(1, 0): ", BOS first", (1, 1): ", [CLS] ... [SEP]"}
    shape = framing.get((len(frame.prefix), len(frame.suffix)), "")
    description = f"{len(rows)} prompts of {seq_len} tokens from {len(texts)} texts ({frame.style}{shape})"
    return tokens, description
