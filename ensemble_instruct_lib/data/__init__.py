"""The data layer: the public data the method starts from and the one way to read and write JSONL.

`public` locates, validates and fetches (pinned URL and sha256) the Self-Instruct seed tasks, the
252 user-oriented tasks and the eight GPT-3-family models' recorded answers; `superni` reads the
SuperNI test references and task files; `eval_items` is the evaluation item both share; `jsonl`
reads and writes JSONL crash-safely (flushed appends, atomic rewrites); `config_builder` builds
every typed config from YAML or a mapping, its errors naming file, line and field. Nothing here
knows about models, prompts or runs.
"""
