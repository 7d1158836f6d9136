"""What every process shares to be run and watched: configuration, metrics, logs, the
store sampler, the back-off of long-running loops and a serving process's garbage
collector."""

from __future__ import annotations
