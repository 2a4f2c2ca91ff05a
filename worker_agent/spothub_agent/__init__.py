"""The thin agent on spothub's GPU instances: the standard library, boto3 and pydantic (nvidia-ml-py optional).

Runs on Python 3.11 or later (install.sh installs 3.11 where the image has neither 3.12 nor 3.11).
Takes from the control plane's own modules, which the agent bundle ships beside this package under
`spothub_core/`: the event contracts and instance tag keys (`contracts`), every timing (`timings`) and
the agent API's request models (`models.agent`), and in batch mode the worker API's (`models.batch_workers`).
Its events and API bodies are those models, so they are what the control plane validates them with.
"""

__version__ = "0.2.0"
