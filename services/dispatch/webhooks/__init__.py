"""Provider webhooks: what SendGrid, Mailgun, Postmark, Twilio and Vonage report about the messages
dispatch sent (delivered, opened, bounced, …), verified and normalised into engagement events.

One module per provider holds two pure functions: ``verify`` (raises ``WebhookAuthError`` for a
forged, missing or stale signature) and ``parse`` (the request body as ``Engagement`` values).
``registry`` chooses them by provider kind; ``recorder`` turns engagements into events, dedupe
rows and suppressions in one transaction. The HTTP route is ``entrypoints/webhooks.py``.
"""
