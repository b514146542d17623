"""Seed and schedule variants of a zoo series, and how a model string names them (docs/zoo.md).

A zoo series is a recipe (``ZooSpec``) trained with one seed on one checkpoint schedule. The model
string names all three, so that every reader (CLI, API, workers, weights identity, dashboard) sees
the variant without any other field:

- ``zoo:induction-2l``: seed 0 on the recipe's own schedule (the reference series);
- ``zoo:induction-2l-seed3``: seed 3, same schedule;
- ``zoo:induction-2l-every5``: seed 0, checkpoints at the recipe's steps *and* every multiple of 5;
- ``zoo:induction-2l-seed3-every5``: both, always in this order.

Each variant has its own directory, ``<zoo_dir>/<variant name>``, so a dense-checkpoint run is never
confused with the plain one. A name has exactly one spelling: seed 0 and leading zeros are refused
(``-seed0`` is the plain name), so the same weights never get two analysis ids.

>>> v = parse_series_name("zoo:induction-2l-seed3-every5")
>>> v.base, v.seed, v.every, v.name
('induction-2l', 3, 5, 'induction-2l-seed3-every5')
>>> len(v.checkpoint_steps), len(parse_series_name("induction-2l").checkpoint_steps)
(201, 41)
>>> parse_seeds("0-2,7")
[0, 1, 2, 7]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from phasescope.errors import InvalidRequest, ModelNotFound
from phasescope.zoo.spec import ZooSpec

__all__ = [
    "MAX_SEED",
    "MAX_SEEDS",
    "MAX_VARIANT_CHECKPOINTS",
    "SeriesVariant",
    "parse_seeds",
    "parse_series_name",
]

MAX_SEED = 9999
"""Largest training seed a model string may name."""
MAX_SEEDS = 64
"""Most seeds one ``--seeds`` selection may list (each is a training run)."""
MAX_VARIANT_CHECKPOINTS = 501
"""Most checkpoints an ``-every<N>`` schedule may have: the disk a series takes grows with it
(grokking-p59 is 0.8 MB a checkpoint), and 500 already resolves a transition to a few steps."""

# The base name is matched lazily, so the suffixes bind to the end: "induction-2l-seed3-every5".
_NAME = re.compile(
    r"^(?P<base>[a-z0-9][a-z0-9-]*?)(?:-seed(?P<seed>[0-9]{1,6}))?(?:-every(?P<every>[0-9]{1,6}))?$"
)


@dataclass(frozen=True)
class SeriesVariant:
    """One trained series of the zoo: a recipe, a training seed, and a checkpoint schedule.

    Attributes:
        base: the recipe's name, a key of ``phasescope.zoo.ZOO``.
        seed: the training seed (initialisation and data; ``ZooSpec.task_for_seed``).
        every: with a value, checkpoints are also saved at every multiple of it (``checkpoint_steps``).
    """

    base: str
    seed: int = 0
    every: int | None = None

    @property
    def spec(self) -> ZooSpec:
        """The recipe."""
        from phasescope.zoo.registry import ZOO

        return ZOO[self.base]

    @property
    def name(self) -> str:
        """The canonical name: the directory under the zoo directory, and ``zoo:<name>``."""
        seed = f"-seed{self.seed}" if self.seed else ""
        every = f"-every{self.every}" if self.every else ""
        return f"{self.base}{seed}{every}"

    @property
    def model(self) -> str:
        """The model string, ``zoo:<name>``."""
        return f"zoo:{self.name}"

    @property
    def checkpoint_steps(self) -> tuple[int, ...]:
        """The steps saved: the recipe's schedule, united with the multiples of ``every`` if set."""
        steps = set(self.spec.checkpoint_steps)
        if self.every:
            steps |= set(range(0, self.spec.steps + 1, self.every))
        return tuple(sorted(steps))

    def with_seed(self, seed: int) -> SeriesVariant:
        """The same recipe and schedule for another seed (checked like a parsed name)."""
        return _checked(SeriesVariant(self.base, int(seed), self.every))


def _min_every(spec: ZooSpec) -> int:
    """The smallest ``every`` whose schedule stays within ``MAX_VARIANT_CHECKPOINTS``."""
    every = max(1, spec.steps // MAX_VARIANT_CHECKPOINTS)
    base = set(spec.checkpoint_steps)
    while len(base | set(range(0, spec.steps + 1, every))) > MAX_VARIANT_CHECKPOINTS:
        every += 1
    return every


def _checked(variant: SeriesVariant) -> SeriesVariant:
    spec = variant.spec
    if not 0 <= variant.seed <= MAX_SEED:
        raise InvalidRequest(f"seed {variant.seed} is outside 0..{MAX_SEED}", field="model")
    if variant.every is not None:
        low = _min_every(spec)
        if not low <= variant.every <= spec.steps:
            raise InvalidRequest(
                f"every{variant.every}: {spec.name} checkpoints every N steps for N in {low}..{spec.steps} "
                f"(at most {MAX_VARIANT_CHECKPOINTS} checkpoints)",
                field="model",
            )
    return variant


def parse_series_name(name: str) -> SeriesVariant:
    """A zoo series name (``zoo:`` prefix optional) as a ``SeriesVariant``; see the module docstring.

    Raises:
        ModelNotFound: the recipe is not in the zoo (the valid names are the choices).
        InvalidRequest: a seed or ``every`` out of its limits, or not in its one canonical spelling.
    """
    from phasescope.zoo.registry import ZOO

    key = name.strip().removeprefix("zoo:")
    match = _NAME.match(key)
    if match is None or match["base"] not in ZOO:
        raise ModelNotFound(
            f"unknown zoo series {key!r} (a recipe name, optionally with -seed<N> and -every<N>)",
            field="model",
            choices=sorted(f"zoo:{n}" for n in ZOO),
        )
    seed_text, every_text = match["seed"], match["every"]
    for label, text in (("seed", seed_text), ("every", every_text)):
        if text is not None and (text != str(int(text)) or int(text) == 0):
            plain = "; seed 0 is the plain name" if label == "seed" else ""
            raise InvalidRequest(
                f"{key!r}: write -{label}<N> with N ≥ 1 and no leading zeros{plain}, "
                f"e.g. zoo:{match['base']}-{label}3",
                field="model",
            )
    seed = int(seed_text) if seed_text else 0
    every = int(every_text) if every_text else None
    return _checked(SeriesVariant(match["base"], seed, every))


def parse_seeds(text: str) -> list[int]:
    """A seed selection: ranges and lists, ``0-4``, ``0,2,7``, ``0-2,7``; sorted, without repeats.

    Raises:
        InvalidRequest: an unreadable item, a seed outside ``0..MAX_SEED``, or more than ``MAX_SEEDS``.
    """
    seeds: set[int] = set()
    for item in (part.strip() for part in text.split(",")):
        m = re.fullmatch(r"([0-9]{1,6})(?:-([0-9]{1,6}))?", item)
        if m is None:
            raise InvalidRequest(f"seeds: {item!r} is neither a seed nor a range A-B", field="seeds")
        lo = int(m[1])
        hi = int(m[2]) if m[2] is not None else lo
        if hi < lo or hi > MAX_SEED:
            raise InvalidRequest(
                f"seeds: {item!r} must be a range A-B with A ≤ B ≤ {MAX_SEED}", field="seeds"
            )
        seeds.update(range(lo, hi + 1))
    if len(seeds) > MAX_SEEDS:
        raise InvalidRequest(f"seeds: {len(seeds)} seeds; at most {MAX_SEEDS}", field="seeds")
    return sorted(seeds)
