"""Keeping the portal in step with the billing system: the shapes records arrive in
(schemas), how they are written (upsert), and how they are read back (serialize). The
JSON API, the bulk import and export, and the webhooks all use these, so a record means
the same thing whichever way it travels."""
