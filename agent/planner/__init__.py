"""The offline intent planner: a deterministic chat model for when no LLM is configured.

It maps the small goal grammar in `grammar` to the same tool calls an LLM would make, and
answers everything else with what it understood plus that grammar. One job per module:
`lexicon` (words), `grammar` (the lines users can say; the help answer and the README table),
`parser` (a sentence -> `Request`), `plan` (a request -> tool calls), `summaries` (tool results
-> words), `chat_model` (`OfflinePlanner`, the LangChain chat model).

Nothing is re-exported here, so that `python -m agent.planner.grammar` runs without importing
LangChain; import `OfflinePlanner` from `agent.planner.chat_model`.
"""
