"""Patients' personal data: canonical forms and validation of real-name identity
(:mod:`~inventory.privacy.identity`), field encryption and the blind index
(:mod:`~inventory.privacy.crypto`)."""

from __future__ import annotations
