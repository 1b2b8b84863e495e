"""The Gradio app, at /ui of `imaging-agent serve` (or `ui`, `python app.py`): chat, approvals, jobs, status.

- Chat (`chat_tab`): the chat graph streamed into a `gr.Chatbot` (`transcript`): each tool call is
  a collapsible step with a short result, each study's workflow progress a live line, then the
  answer. One conversation (LangGraph thread) per browser session.
- When the conversation stops at an approval, the approval card (`cards`) shows what a
  radiologist needs to decide (patient/study, series, contour previews, volumes and QA flags,
  every pending write); Approve / Reject resume the chat graph and stream its continuation.
- Approvals tab (`approvals_tab`): every pending approval in the durable store (also those
  started from the CLI or Python), answered through `AgentRuntime.decide`. Jobs tab (`layout`):
  every job and its per-study outcomes. The header (`services_check`) says whether PACS and FHIR
  answer.

Every graph or runtime call goes through `session.LockedGraphs` (one lock, worker threads).
Only 127.0.0.1 is served (`server`): the app shows patient data and has no login.
"""
