"""Webhooks out: where an endpoint may be (`safety`), how a message is signed
(`signing`), when it is tried again (`schedule`), and the sender (`sender`)."""
