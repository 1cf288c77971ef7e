"""Event-sourced domain: aggregates, their events, and the command-handling application."""
