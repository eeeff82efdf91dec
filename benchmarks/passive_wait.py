"""Imported for its effect, before torch: idle OpenMP threads sleep, as under the CLI.

``talkinghead.threads.set_wait_policy`` must run before torch loads its OpenMP runtime, so a
benchmark that times our code in its own process imports this module ahead of ``import torch``
(isort keeps ``import passive_wait`` above ``import torch``). Without it two spinning threads lose
most of their time beside any other busy process (issue #15; RESULTS.md run 15).
"""

import warnings

from talkinghead.threads import set_wait_policy

if not set_wait_policy():
    warnings.warn(
        "torch was loaded before passive_wait: threads keep OpenMP's wait policy", stacklevel=2
    )
