"""The base of spothub's pydantic models: each builds its validator when first used, not when its module is imported.

A Lambda's cold start imports every model the modules it uses name, and a handler validates with a few of them:
built at import, they took a tenth of a handler's cold import (issue 18: at most 2 x a bare `import boto3`).
Subclasses add their own settings; pydantic merges them with these.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(defer_build=True)
