"""Commerce webhooks: Shopify and WooCommerce deliveries turned into catalogue events.

- ``signature``: HMAC-SHA256 over the raw body, compared in constant time.
- ``mapping``: what both platforms share (the delivery, identities, money, validation).
- ``shopify`` / ``woocommerce``: one pure mapper per topic, onto the native catalogue.
- ``store``: per-workspace secrets, delivery dedupe and the order → customer index.
- ``routes``: ``webhooks_router``, the two HTTP endpoints.
- ``cli``: ``ciclo webhooks set|list|remove|prune``.

Nothing is imported here, so ``ciclo`` can register the CLI group without loading FastAPI.
"""
