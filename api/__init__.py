"""The HTTP front door: authentication, validation, idempotent enqueue, reads, and ACS's callbacks."""
