"""``manage.py identities``."""
