"""Offline benchmark evaluation: benchmark loaders, graders (sandbox and math-verify) and `azr eval`."""
