"""Integrations with other services: events in from them, ledger commands out."""
