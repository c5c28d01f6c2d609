"""ensemble-instruct: instruction-tuning data from a heterogeneous mixture of open LMs.

Implements Ensemble-Instruct (Lee et al., Findings of EMNLP 2023); see ../shared/docs/METHOD.md
restated in docs/ and the README. The public names are listed in `__all__`.
"""

from .consensus import ConsensusResult, select_consensus
from .data import SeedTask, fetch_data, load_recorded, load_seed_tasks
from .errors import ConfigError, DataError
from .filters import NoveltyFilter, instruction_rejection
from .parsing import ParsedInstance, parse_instance, parse_instructions, parse_output
from .rouge import NoveltyIndex, rouge_l

__all__ = [
    "ConfigError",
    "ConsensusResult",
    "DataError",
    "NoveltyFilter",
    "NoveltyIndex",
    "ParsedInstance",
    "SeedTask",
    "fetch_data",
    "instruction_rejection",
    "load_recorded",
    "load_seed_tasks",
    "parse_instance",
    "parse_instructions",
    "parse_output",
    "rouge_l",
    "select_consensus",
]

__version__ = "0.1.0"
