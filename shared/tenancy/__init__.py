"""Tenancy: workspaces and scoped API keys (stored as SHA-256 hashes, shown once, revocable).

Every HTTP-serving service authenticates against these tables; they have their own migration chain
(``tenancy``) so the services can share a database or point at one that holds them.
"""
