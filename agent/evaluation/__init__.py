"""The goal suite: seeded worlds, goals run through the chat graph, graded by final state and tool trace.

`world` seeds the studies a goal needs; `goals` reads the goal file (benchmarks/goals.yaml);
`grading` compares what happened with what a goal expects (pure); `runner` runs goals against the
local services; `table` prints and saves the results (`imaging-agent eval`).
"""
