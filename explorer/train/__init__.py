"""Training scripts for the small models the lessons ship (run as ``python -m explorer.train.<name>``)."""
