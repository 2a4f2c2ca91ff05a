"""CDK stacks and constructs of spothub: one HubStack, one WorkerStack per worker region."""
