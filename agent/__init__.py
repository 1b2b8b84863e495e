"""The planner: settings, chat-model factory, CLI."""
