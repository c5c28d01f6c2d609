"""ensemble-instruct: instruction-tuning data from a heterogeneous mixture of open LMs.

Implements Ensemble-Instruct (Lee et al., Findings of EMNLP 2023); see ../shared/docs/METHOD.md
restated in docs/ and the README. The public names are listed in `__all__`.
"""

from .data import SeedTask, fetch_data, load_recorded, load_seed_tasks
from .errors import ConfigError, DataError

__all__ = [
    "ConfigError",
    "DataError",
    "SeedTask",
    "fetch_data",
    "load_recorded",
    "load_seed_tasks",
]

__version__ = "0.1.0"
