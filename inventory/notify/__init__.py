"""Notifications: facts of the durable record -> messages on WeChat subscribe messages
and SMS, at least once with an idempotency key per (event, channel, recipient).

``settings`` (configuration), ``kinds`` (which fact is which message, to whom),
``templates`` (the zh-CN texts), ``channels`` with ``wechat`` and ``sms`` (the providers),
``planner`` (events -> deliveries), ``sender`` (deliveries -> providers), ``scanner``
(reminders and ends of bans), ``service`` (the worker's loop), ``operators`` (dead
letters and subscriptions for the API). docs/notifications.md tells the whole story.
"""
