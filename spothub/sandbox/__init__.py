"""The sandbox: spothub's synthesized stacks deployed into an embedded AWS emulator (moto) and run."""
