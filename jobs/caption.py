"""`ray job submit` entrypoint for the InternVL batch job.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/caption.py --config configs/internvl2_5-4b.yaml --set generation.max_new_tokens=64

Exits 0 on success, 1 when the job failed, 2 on an invalid configuration or unreadable model/manifest, 3 when
it finished but model replicas kept dying on some rows (`output.crashed_rows_exit_code`; they are error rows),
130 when interrupted (the result files written stay; the same command resumes). `--verbose` turns Ray Data's
progress bars and execution logs back on.
"""

import os
import sys

# With `--working-dir .` the package travels as source next to this file; an installed package wins.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from internvl_batch.cli import caption_main

if __name__ == "__main__":
    sys.exit(caption_main())
