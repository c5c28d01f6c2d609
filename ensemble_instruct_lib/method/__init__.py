"""The method as pure functions (METHOD.md), with no models, files or runs.

`rouge` (Rouge-L identical to rouge-score, the novelty index), `prompts` (versioned prompt builders
per stage and task type), `parsing` (one LM response into instructions, an instance or an output),
`filters` (keyword, length and novelty decisions with reasons), `consensus` (the stage-4 selection),
`records` (the record of each stage file) and `diversity` (verb-noun statistics of instructions).
Every layer above composes these.
"""
