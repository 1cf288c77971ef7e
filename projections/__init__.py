"""Read models built from the event log: each projection owns its tables and its position."""
