"""Export of the journal to SIEMs, over syslog.

A SOC watches many systems through one SIEM; it will not poll hdsvault's own API. So the
journal is pushed to it in the formats SIEMs already parse, over the transport they already
receive:

- ``formats``: one journal entry -> one RFC 5424 syslog message, in three flavours
  (RFC 5424 structured data, ArcSight CEF, Elastic Common Schema JSON). Pure functions, total
  on any entry, never exporting ``detail_sealed`` (only a flag that it exists).
- ``transport``: :class:`~hdsvault.journal.siem.transport.SyslogSender`, octet-counted syslog
  over TCP (RFC 6587) or TLS (RFC 5425) with certificate verification.
- ``exporter``: :class:`~hdsvault.journal.siem.exporter.SiemExporter`, which reads a log past a
  persistent cursor and advances the cursor only after a batch was written: at-least-once
  delivery (duplicates possible after a failure, loss not), described in ``docs/siem.md``.

The journal stays the authoritative record; what the SIEM receives is a view of it, keyed by
``log_id`` and ``seq`` so that any exported event can be matched to its verifiable leaf.
"""
