"""The study workflow as plain steps: read, fetch, assemble, check, segment, build, approve, write.

No LangGraph here: the graphs in `graphs/` wrap these steps as thin nodes, and the offline
`contour` command and the planner's tools call the same steps.
"""
