"""Building and sending messages: templates in templates/emails/<name>/, a durable
outbox, and the sender. Never imports a face."""
