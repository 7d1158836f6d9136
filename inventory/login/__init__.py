"""Patients' login: WeChat mini-program login (code2session), SMS-code login for the H5,
the accounts they name, and the sessions (access and rotating refresh tokens) they
start. The HTTP routes are inventory/api/login.py."""

from __future__ import annotations
