"""FHIR reference strings: parse and normalise them to what the search index stores.

Why one module: the index (extraction), the search parser (``subject=...``) and FHIRPath's
``resolve() is Patient`` filter must agree on what a reference points to, or a resource
indexed under one spelling would not be found under another.

Normal form (the value indexed and compared):

- ``Type/id`` for a local reference, whether written relative (``Patient/123``), absolute on
  one of this server's base URLs (``https://fhir.example/fhir/Patient/123``) or versioned
  (``Patient/123/_history/4``: the version is dropped, search is on the logical resource);
- the absolute URL itself for a resource on another server (``https://other/fhir/Patient/9``)
  and for canonical URLs (``http://acme/Questionnaire/q|2.0``; the ``|version`` is kept in
  :attr:`ParsedRef.url` and dropped in :attr:`ParsedRef.canonical`);
- ``#id`` for a reference to a contained resource: its type is looked up in ``contained``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ID_RE", "ParsedRef", "normalise_base", "parse_reference", "target_type"]

ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_TYPE = r"[A-Z][A-Za-z]{1,63}"
_ID = r"[A-Za-z0-9\-.]{1,64}"
_RELATIVE = re.compile(rf"({_TYPE})/({_ID})(?:/_history/{_ID})?")
_ABSOLUTE = re.compile(rf"([a-z][a-z0-9+.\-]*://.+?)/({_TYPE})/({_ID})(?:/_history/{_ID})?")


@dataclass(frozen=True, slots=True)
class ParsedRef:
    """What a reference string points to (at most one of local / url / contained)."""

    type: str | None
    id: str | None
    url: str | None = None
    contained: str | None = None

    @property
    def local(self) -> str | None:
        """``Type/id`` when the target is on this server."""
        if self.type is not None and self.id is not None:
            return f"{self.type}/{self.id}"
        return None

    @property
    def canonical(self) -> str | None:
        """The URL without a ``|version`` suffix (canonical references)."""
        if self.url is None:
            return None
        return self.url.split("|", 1)[0]


def normalise_base(url: str) -> str:
    """A server base URL as compared here: no trailing slash, scheme and host lowercased."""
    url = url.strip().rstrip("/")
    m = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*://[^/]*)(.*)", url)
    if m is None:
        return url
    return m.group(1).lower() + m.group(2)


def parse_reference(text: str, base_urls: Iterable[str] = ()) -> ParsedRef | None:
    """Parse a reference string; None for an empty or unusable one (e.g. conditional)."""
    text = text.strip()
    if not text or "?" in text:
        return None
    if text.startswith("#"):
        return ParsedRef(type=None, id=None, contained=text[1:] or None)
    m = _RELATIVE.fullmatch(text)
    if m is not None:
        return ParsedRef(type=m.group(1), id=m.group(2))
    m = _ABSOLUTE.fullmatch(text)
    if m is not None:
        if normalise_base(m.group(1)) in {normalise_base(b) for b in base_urls}:
            return ParsedRef(type=m.group(2), id=m.group(3))
        return ParsedRef(type=m.group(2), id=None, url=text)
    if ":" in text:
        return ParsedRef(type=None, id=None, url=text)
    return None


def target_type(ref: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> str | None:
    """The resource type a Reference element points to, as FHIRPath ``resolve()`` would see.

    Uses the reference string, then a contained resource of ``root``, then ``Reference.type``.
    """
    text = ref.get("reference")
    if isinstance(text, str):
        parsed = parse_reference(text)
        if parsed is not None:
            if parsed.type is not None:
                return parsed.type
            if parsed.contained is not None and root is not None:
                contained = root.get("contained")
                for res in contained if isinstance(contained, list) else ():
                    if isinstance(res, Mapping) and res.get("id") == parsed.contained:
                        rt = res.get("resourceType")
                        return rt if isinstance(rt, str) else None
    declared = ref.get("type")
    if isinstance(declared, str) and re.fullmatch(_TYPE, declared):
        return declared
    return None
