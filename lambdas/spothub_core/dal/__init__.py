"""Data access: the only code that knows how spothub's items are laid out in DynamoDB."""
