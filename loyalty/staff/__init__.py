"""Staff accounts for the console: email and password, role marketing or admin, lockout."""
