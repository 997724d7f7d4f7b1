"""Records: the FHIR R4 store (versions, history, search index, bundles, validation).

A service layer (no HTTP): each public function is one unit of work that authorizes
(:mod:`.guard`), validates (:mod:`.validation`, :mod:`.ins`), seals and stores
(:mod:`.storage`, :mod:`.indexing`) and journals (:mod:`.journaling`) in one transaction.

- :mod:`.writes` create, update (as create), patch, delete and their conditional forms;
- :mod:`.reads` read, vread, history; :mod:`.searching` + :mod:`.finder` search;
- :mod:`.bundles` batch and transaction; :mod:`.bulk` import/export (reversibility);
- :mod:`.audit_view` the AuditEvent view of the journal; :mod:`.summary` ``_summary``;
- :mod:`.search` the pure search library (parameters, tokens, plans).
"""
