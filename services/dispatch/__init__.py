"""Dispatch: consumes message requests, renders Liquid templates and sends each message once through
an email or SMS provider over HTTP; records every outcome and emits it back as an event.

domain/ (outcomes, policies) → service_layer/ (handlers, unit of work) → adapters/ (tables,
templates, providers) → entrypoints/ (the consumer worker, HTTP), wired in bootstrap.py.
"""
