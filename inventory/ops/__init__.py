"""What every process shares to be run and watched: configuration, metrics, logs, the
store sampler and the back-off of long-running loops."""

from __future__ import annotations
