"""Webhook deliveries (issue #14): signing, target checks (SSRF) and the outbox's sender.

What is sent is decided in `licensing/webhook_events.py` (the outbox, written with each
change); this package sends it over HTTP.
"""
