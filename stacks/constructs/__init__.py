"""One construct per concern, shared by the hub and worker stacks."""
