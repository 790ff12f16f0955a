"""Journey: consumes customer events, keeps customer state, runs JSON journeys as per-customer state
machines, and asks dispatch for messages through a transactional outbox.

domain/ (pure) → service_layer/ (handlers, unit of work) → adapters/ (tables, repositories)
→ entrypoints/ (the consumer worker, HTTP), wired in bootstrap.py.
"""
