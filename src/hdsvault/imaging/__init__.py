"""Imaging: the DICOM instance store, its study/series/instance index, QIDO/WADO/STOW logic.

Faces (DICOMweb in ``api/dicomweb.py``, DIMSE in ``dicom/``) parse and render; every act goes
through :class:`hdsvault.imaging.store.ImagingStore`, one unit of work per call:
``authorize -> seal -> store blob -> index + journal (one transaction)`` for writes and
``authorize -> fetch -> journal (committed) -> open -> return`` for reads.
"""
