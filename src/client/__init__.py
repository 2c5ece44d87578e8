"""The ``taskfleet`` command line and the HTTP client of the scheduler service."""
