"""Webhooks: receivers' settings, payloads, the outbox and its delivery."""
