"""The measures: pure functions on tensors (one module each) and the registry that declares them.

The registry is re-exported here and imports no torch, so the backend and the dashboard read it
through this package; the measure modules themselves import torch and are imported by name.
"""

from phasescope.measures.registry import (
    KINDS,
    Kind,
    Measure,
    OrderParameter,
    Quantity,
    WorkSizes,
    default_measures,
    get_measure,
    label,
    measure_names,
    measures,
    order_parameters,
    order_quantity,
    quantities,
    register_measure,
    registered,
    unregister_measure,
)

__all__ = [
    "KINDS",
    "Kind",
    "Measure",
    "OrderParameter",
    "Quantity",
    "WorkSizes",
    "default_measures",
    "get_measure",
    "label",
    "measure_names",
    "measures",
    "order_parameters",
    "order_quantity",
    "quantities",
    "register_measure",
    "registered",
    "unregister_measure",
]
