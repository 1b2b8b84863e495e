"""Typed tools and the plain clients and builders under them."""
