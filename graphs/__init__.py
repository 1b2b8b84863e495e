"""LangGraph graphs: study pipeline, batch, chat."""
