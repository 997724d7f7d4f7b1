"""The HL7 v2 MLLP face: frames, TLS, one ``Ingest.receive`` per message."""
