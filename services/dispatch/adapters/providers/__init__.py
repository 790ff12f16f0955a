"""Providers: adapters that hand a rendered message to an email/SMS service (or the local sink)."""
