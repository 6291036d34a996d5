"""The worker runtime: settings, ledger, ACS client, operations and event correlation."""
