"""Domain code shared by spothub's Lambda functions: contracts, settings, data access, decisions.

Handlers (one folder per concern beside this package) parse, log and call into here; nothing in
this package knows about Lambda events except `http`, which maps domain errors to HTTP answers.
"""
