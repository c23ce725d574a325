"""ASTRO's method: problems, answers, search, cloning, training, evaluation, analysis.

Pure Python + torch. It reaches the outside world only through the Protocols in
`astro_core.protocols`, so every algorithm runs in-process in a test. It never imports grpc.
"""

from astro_core.config import load_config
from astro_core.problems import Problem, load_problems

__all__ = ["Problem", "load_config", "load_problems"]
