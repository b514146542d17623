"""The model zoo: small models we train ourselves, with real phase transitions, offline and seeded.

Series (model strings ``zoo:<name>``, recipes and results in docs/zoo.md):

- ``induction-2l``: 2 attention-only layers; a loss plateau, then induction heads form (~step 475).
- ``induction-1l``: the 1-layer control; it never leaves the plateau.
- ``grokking-p59``: modular addition mod 59; memorisation, then late generalisation (grokking).

Each recipe trains for any seed and, optionally, a denser checkpoint schedule, as its own series:
``zoo:induction-2l-seed3``, ``zoo:induction-2l-every5`` (``phasescope.zoo.variants``).

>>> from phasescope.zoo import ZOO
>>> sorted(ZOO)
['grokking-p59', 'induction-1l', 'induction-2l']
>>> ZOO["induction-2l"].n_layers, len(ZOO["induction-2l"].checkpoint_steps)
(2, 41)
"""

from typing import TYPE_CHECKING

from phasescope._lazy import attach

if TYPE_CHECKING:  # the re-exports, imported on first use (phasescope._lazy)
    from phasescope.zoo.parallel import train_seeds
    from phasescope.zoo.registry import (
        ZOO,
        get_spec,
        get_variant,
        is_trained,
        train_series,
        zoo_series_dir,
    )
    from phasescope.zoo.spec import ZooSpec
    from phasescope.zoo.tasks import eval_batch
    from phasescope.zoo.variants import SeriesVariant, parse_seeds, parse_series_name

__getattr__, __dir__ = attach(__name__, __file__)

__all__ = [
    "SeriesVariant",
    "ZOO",
    "ZooSpec",
    "eval_batch",
    "get_spec",
    "get_variant",
    "is_trained",
    "parse_seeds",
    "parse_series_name",
    "train_seeds",
    "train_series",
    "zoo_series_dir",
]
