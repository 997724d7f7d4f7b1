"""The roles a principal can hold. Policy (which role may do what) is its own module."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    CLINICIAN = "clinician"
    NURSE = "nurse"
    PHARMACIST = "pharmacist"
    LAB = "lab"
    RADIOLOGY = "radiology"
    ADMISSION = "admission"
    DPO = "dpo"
    PLATFORM_OPERATOR = "platform-operator"
    SERVICE = "service"
