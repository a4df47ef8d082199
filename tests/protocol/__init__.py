"""Tests of the sans-IO FastCGI codec (gateway.protocol)."""
