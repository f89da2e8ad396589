"""Models that break the limits, not the boundary, in their backward pass (which only the checks run: the
harness's own probes of a model, while it chooses the checks, run forward only). One hangs, one allocates
without bound, one hangs where no alarm reaches it (it ignores SIGALRM), so only the watchdog outside the
sandbox can stop it."""

import signal
import time
from dataclasses import replace

import torch
from _payload import spec


def _hang(grad):
    time.sleep(3600)


def _hog(grad):
    held = []
    while True:
        held.append(torch.empty(256 << 20, dtype=torch.uint8))  # address space, never touched


def _stubborn(grad):
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    time.sleep(3600)


def _stalling(route, backward):
    """The benign spec whose first embedding runs ``backward`` on the way back."""

    class Stall(torch.autograd.Function):
        @staticmethod
        def forward(ctx, output):
            return output.view_as(output)

        @staticmethod
        def backward(ctx, grad):
            backward(grad)
            return grad

    base = spec(route)

    def build_model():
        model = base.build_model()
        embedding = next(module for module in model.modules() if isinstance(module, torch.nn.Embedding))
        embedding.register_forward_hook(lambda module, inputs, output: Stall.apply(output))
        return model

    return replace(base, build=build_model)


def hang():
    return _stalling("hang", _hang)


def hog():
    return _stalling("hog", _hog)


def stubborn():
    return _stalling("stubborn", _stubborn)
