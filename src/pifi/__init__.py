"""PiFi-ILM: plug one frozen LLM decoder layer into a small model, chosen by ILM layer selection."""
