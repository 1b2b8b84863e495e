"""Report drafting models: a draft of findings for a radiologist to approve, never a signed report.

- `models`: the draft (findings with boxes on the image), the text context sent with the images.
- `context`: that context from FHIR (the ServiceRequest's reason) and from the images' own views,
  with the patient's names and identifiers taken out.
- `cxrreportgen`: the CXRReportGen endpoint (Azure AI Foundry): request, answer, boxes back onto the image.
"""
