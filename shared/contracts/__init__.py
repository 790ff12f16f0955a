"""Versioned wire contracts between the services: what travels on the bus."""
