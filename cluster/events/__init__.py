"""Webhooks: signing (Standard Webhooks), the address policy against SSRF, the guarded HTTP
transport, the retry schedule, and the delivery actor that sends what the outbox fans out."""
