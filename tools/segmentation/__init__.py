"""Segmentation engines: not built yet (see README, "What is not done yet")."""
