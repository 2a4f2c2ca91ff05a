"""CDK stacks and constructs of spothub: one HubStack, one WorkerStack per worker region."""

import os

# jsii (aws-cdk-lib's runtime) prints a boxed end-of-life warning on every start under Node 20, which Debian and
# Ubuntu LTS ship and which still runs the CDK; the pinned CDK CLI works on it. Silenced before anything imports
# aws_cdk (the app, the sandbox, the tests); an operator who sets the variable keeps their own value.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
