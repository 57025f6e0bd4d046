"""Events out: the webhook endpoints, the outbox that turns each event of the
log into one message per subscribed endpoint (`outbox`), and the messages
themselves (`messages`). Sending them is the edge's (api.integrations.webhooks)."""
