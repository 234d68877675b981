"""Pipeline stages: small callable classes (`__init__` once per actor, `__call__` per batch of Arrow rows).

Stages never import Ray; the pipeline builder (`internvl_batch/pipeline.py`) wires them together.
"""
