"""Absolute Zero self-play reasoning."""

import os

# Sandbox workers and the evaluator share the CPU cores with torch. OpenMP's default spin-waiting then
# burns the cores the other processes need: measured here, decoding ran 10x slower. This must be set
# before torch is first imported, hence here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
