"""Tenants: each establishment (hospital, clinic, EHPAD...) is a tenant with its own keys."""
