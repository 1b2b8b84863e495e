"""Hospital intake: DICOM pushed to the agent's node becomes work (inbox, completeness, routing)."""
