"""Security primitives for staff accounts (issue #12): passwords, TOTP, roles, sessions.

Pure modules with no database and no HTTP: the admin's storage and routes are built on them.
"""
