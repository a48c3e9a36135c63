"""The stress harness: a client of the cc_executor service that runs suites and writes reports."""
