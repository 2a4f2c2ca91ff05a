"""The thin agent on spothub's GPU instances: standard library and boto3 only (nvidia-ml-py optional).

Runs on Python 3.11 or later (install.sh installs 3.11 where the image has neither 3.12 nor 3.11).
Imports the event contracts from `spothub_core.contracts` and its default budgets from
`spothub_core.timings`, standard-library-only modules that the agent bundle ships beside this package.
"""

__version__ = "0.2.0"
