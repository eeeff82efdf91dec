"""Optional ``torch.compile`` of the A2V-FDM denoiser for sampling, with an eager fallback (issue #5).

Only ``UNet3D.forward`` goes through dynamo: it is the call repeated once per sampler step over the
whole clip (dawn_spec.md §1.4), so it is the only place where a compile is paid back. Per-video work
(``precompute_source``, the LFG, PBNet, HuBERT) stays eager, and the eager ``UNet3D`` object is left
untouched: ``torch.compile(module)`` returns a wrapper that shares the module's parameters, so
``.to()``, ``state_dict()`` and every other use of the model see the plain module.

``dynamic=False``: one call samples one (1, C, F, h, w) shape, so the graph is specialised to it; a
clip of another length recompiles (dynamo keeps a few shapes, then runs eagerly). Compilation
happens lazily on the first call, so that is where a missing C++ compiler or an unsupported
platform shows up: when the compiled call fails and the eager one succeeds, one warning line is
logged and every later call runs eagerly; when both fail, the eager error is raised (bad input).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from talkinghead.errors import first_line

logger = logging.getLogger(__name__)

# a dynamo backend: a name known to torch.compile ("inductor", "eager", "aot_eager", ...) or a
# callable (fx.GraphModule, example inputs) -> compiled callable
CompileBackend = str | Callable[..., Any]


class CompiledDenoiser:
    """Calls ``module`` through ``torch.compile``; falls back to eager on the first failure.

    Args:
        module: the eager network (e.g. ``UNet3D``); its ``forward`` is compiled, nothing else.
        backend: dynamo backend, default inductor; tests pass a custom callable.

    Call it exactly like ``module``. ``failed`` tells whether the fallback is in effect.
    """

    def __init__(self, module: nn.Module, backend: CompileBackend = "inductor") -> None:
        self.module = module
        self.backend = backend
        self.failed = False
        # lazy: nothing is traced or compiled until the first call
        self._compiled = torch.compile(module, backend=backend, dynamic=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        if self.failed:
            return self.module(*args, **kwargs)
        try:
            return self._compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - whatever the compiler raised, eager decides
            # an input error raises again here, from the eager module, as it would without compile
            out = self.module(*args, **kwargs)
            self.failed = True
            cause = _root_cause(err)
            logger.warning(
                "torch.compile (backend %s) failed, running the UNet eagerly: %s: %s",
                _backend_name(self.backend),
                type(cause).__name__,
                first_line(cause),
            )
            return out


def _backend_name(backend: CompileBackend) -> str:
    return backend if isinstance(backend, str) else getattr(backend, "__name__", repr(backend))


def _root_cause(err: BaseException) -> BaseException:
    # dynamo wraps the backend's error (BackendCompilerFailed: "backend='inductor' raised:"); the
    # wrapped one says what is missing (e.g. the C++ compiler)
    seen = {id(err)}
    while True:
        inner = getattr(err, "inner_exception", None) or err.__cause__
        if inner is None or id(inner) in seen:
            return err
        seen.add(id(inner))
        err = inner
