"""The Anthropic Messages API door: wire models, translation to the engine, answer shapes."""
