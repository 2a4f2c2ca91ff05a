"""IAM for the sandbox: principals with keys of their own, policy evaluation, and the refusals AWS makes."""
