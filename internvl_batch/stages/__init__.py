"""Pipeline stages: small callable classes (`__init__` once per actor, `__call__` per batch of Arrow rows).

Stages never import Ray. Each declares the columns it reads, writes and drops (`columns.py`) and the config
sections its constructor takes (`Stage.sections(config)`); the stage chain (`internvl_batch/pipeline/chain.py`)
lists them in order with their pools' options, checks the columns and wires them together.
"""
