"""The thin agent on spothub's GPU instances. Standard library and boto3 only.

Kept compatible with the Python of the instance image (3.9 and later).
"""

__version__ = "0.1.0"
