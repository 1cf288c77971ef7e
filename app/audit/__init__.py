"""Audit and operations over a data directory: the log's integrity, replay, backups, exports.

HTTP-free and shared by the command line (app/cli) and the admin pages.
"""
