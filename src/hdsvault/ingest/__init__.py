"""Ingest: HL7 v2 messages (ADT, ORU) mapped to FHIR and written through the records service."""
