"""Payments: a provider interface, WeChat Pay API v3 (signed, encrypted notifications),
settling a payment into a booking or a refund, and the refund and payment loops.

See docs/payments.md. Other modules request refunds only through
:func:`inventory.payments.refunds.request_refund`.
"""
