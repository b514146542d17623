"""``python -m phasescope`` is the ``phasescope`` command."""

from phasescope.cli import main

main()
