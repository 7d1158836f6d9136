"""Development tooling behind ``inventory dev`` and the test suite: private Redis, Sentinel,
Cluster and Postgres servers (:mod:`~inventory.devtools.servers`) and the demo hospital
(:mod:`~inventory.devtools.demo`). The service itself never imports it."""

from __future__ import annotations
