"""The planner's typed LangChain tools."""
