"""Run as a separate process by test_namespace.py: the plugin under several cores.

Two VapourSynth environments (each its own core) live side by side; Upscale is called
repeatedly in both, clips are dropped before their core, one core is destroyed while the
other keeps working. Prints 'ok' and the number of forwarded implementations still alive.
"""

from __future__ import annotations

import gc
import sys

import numpy as np
import vapoursynth as vs


class TwoEnvironments(vs.EnvironmentPolicy):
    """The smallest policy: environments created on request, one current at a time."""

    def __init__(self) -> None:
        self.api = None
        self.current = None
        self.alive: set[int] = set()

    def on_policy_registered(self, special_api):
        self.api = special_api

    def on_policy_cleared(self):
        self.api = None

    def get_current_environment(self):
        return self.current

    def set_environment(self, environment):
        previous, self.current = self.current, environment
        return previous

    def is_alive(self, environment):
        return id(environment) in self.alive

    def create(self) -> vs.Environment:
        data = self.api.create_environment()
        self.alive.add(id(data))
        return data, self.api.wrap_environment(data)

    def destroy(self, data) -> None:
        self.alive.discard(id(data))
        self.api.destroy_environment(data)


def upscale_in(environment: vs.Environment, model: str, seed: int) -> np.ndarray:
    with environment.use():
        core = vs.core
        if not hasattr(core, "coreml_esrgan"):
            core.std.LoadPlugin(sys.argv[2])
        clip = core.std.BlankClip(format=vs.RGBS, width=24, height=16, length=2,
                                  color=[seed / 10, 0.5, 0.2])
        for _ in range(3):  # repeated calls, the earlier clips dropped at once
            out = core.coreml_esrgan.Upscale(clip, model=model, tile=[16], overlap=2)
        frame = out.get_frame(1)
        values = np.asarray(frame[0]).copy()
        del frame, out, clip
        return values


def main() -> int:
    model = sys.argv[1]
    policy = TwoEnvironments()
    vs.register_policy(policy)
    (data_a, env_a), (data_b, env_b) = policy.create(), policy.create()
    first_a = upscale_in(env_a, model, 1)
    first_b = upscale_in(env_b, model, 2)
    assert not np.array_equal(first_a, first_b)
    policy.destroy(data_a)  # one core gone, the other must keep working
    again_b = upscale_in(env_b, model, 2)
    assert np.array_equal(first_b, again_b)
    # Every forwarded implementation must be gone while a core still lives: the plugin
    # holds one only for the duration of a call.
    gc.collect()
    from vs_coreml_esrgan._namespace import _Implementation

    alive = sum(type(o) is _Implementation for o in gc.get_objects())
    policy.destroy(data_b)
    print(f"ok {alive}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
