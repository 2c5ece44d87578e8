"""The scheduler: what decides which task runs where, and keeps the results.

Three paths, one subpackage each: ``local`` (worker processes on this
machine), ``fleet`` (the deployed stack's instances) and ``service`` (the HTTP
service and its journal). What they share sits here: the summary of a run,
the retry policy and the errors.
"""
