"""JSON API handlers (API.md). Each handler: authenticate, validate, command, settle, read."""
