"""The skill-learning coding agent: config, models, the LangGraph loop, memory, REPL."""
