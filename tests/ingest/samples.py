"""Realistic French HL7 v2 samples (IHE PAM France / HPRIM-like lab results).

INS (Identifiant National de Santé) in PID-3 with the INS-NIR OID 1.2.250.1.213.1.4.8 and a
valid NIR key, a local IPP as second identifier; names with accents, French addresses.
"""

from __future__ import annotations

from hdsvault.records.ins import nir_key

INS_OID = "1.2.250.1.213.1.4.8"


def nir(first13: str) -> str:
    return f"{first13}{nir_key(first13):02d}"


INS_DUPONT = nir("2800175112345")
INS_MARTIN = nir("1750369123456")
CR = "\r"


def pv1(cls: str, visit: str = "", admit: str = "", discharge: str = "", doctor: str = "") -> str:
    """PV1 with fields at their standard positions (2 class, 3 location, 7 attending
    doctor, 19 visit number, 44 admit and 45 discharge date/time)."""
    f = [""] * 46
    f[0], f[1], f[2] = "PV1", "1", cls
    f[3] = "CARDIO^101^A^CHU_PARIS"
    f[7], f[19], f[44], f[45] = doctor, visit, admit, discharge
    return "|".join(f).rstrip("|")


def msh(
    event: str, control: str, app: str = "SIH_ADT", fac: str = "CHU_PARIS", structure: str = ""
) -> str:
    kind, trig = event.split("^")
    s = structure or f"{kind}_{trig}"
    return f"MSH|^~\\&|{app}|{fac}|HDSVAULT|HDSVAULT|20261129083000||{kind}^{trig}^{s}|{control}|P|2.5|||AL|NE||8859/1|FR"


def pid(ins: str, ipp: str, family: str, given: str, birth: str, sex: str) -> str:
    return (
        f"PID|1||{ins}^^^ASIP-SANTE-INS-NIR&{INS_OID}&ISO^INS~{ipp}^^^CHU_PARIS&1.2.250.1.71.4.2.2.750712184&ISO^PI"
        f"||{family}^{given}^^^^^L||{birth}|{sex}|||12 rue de la Santé^^Paris^^75014^FRA^H||0145678910"
    )


def adt_a01(control: str = "ADT0001", family: str = "DUPONT", given: str = "Hélène") -> str:
    return (
        CR.join(
            [
                msh("ADT^A01", control),
                "EVN|A01|20261129082500",
                pid(INS_DUPONT, "IPP123456", family, given, "19800115", "F"),
                pv1("I", "VN20261129001", "20261129082000", doctor="10001234567^MARTIN^Paul"),
            ]
        )
        + CR
    )


def adt_a08(control: str = "ADT0002") -> str:
    return (
        CR.join(
            [
                msh("ADT^A08", control),
                "EVN|A08|20261129090000",
                pid(INS_DUPONT, "IPP123456", "DUPONT-LEROY", "Hélène", "19800115", "F"),
                pv1("I", "VN20261129001"),
            ]
        )
        + CR
    )


def adt_a03(control: str = "ADT0003") -> str:
    return (
        CR.join(
            [
                msh("ADT^A03", control),
                "EVN|A03|20261201110000",
                pid(INS_DUPONT, "IPP123456", "DUPONT-LEROY", "Hélène", "19800115", "F"),
                pv1("I", "VN20261129001", "20261129082000", "20261201110000"),
            ]
        )
        + CR
    )


def adt_a40(control: str = "ADT0040") -> str:
    return (
        CR.join(
            [
                msh("ADT^A40", control, structure="ADT_A39"),
                "EVN|A40|20261202100000",
                pid(INS_DUPONT, "IPP123456", "DUPONT-LEROY", "Hélène", "19800115", "F"),
                "MRG|IPP999999^^^CHU_PARIS&1.2.250.1.71.4.2.2.750712184&ISO^PI",
            ]
        )
        + CR
    )


def oru_r01(control: str = "LAB0001", potassium: str = "4.2") -> str:
    return (
        CR.join(
            [
                msh("ORU^R01", control, app="LABO", fac="LABO_CHU"),
                pid(INS_MARTIN, "IPP654321", "MARTIN", "François", "19750312", "M"),
                "PV1|1|O",
                "OBR|1|CMD789|LAB20261129-42|24326-1^Ionogramme sanguin^LN|||20261129074500|||||||||||||||20261129083000|||F",
                f"OBX|1|NM|2823-3^Potassium [Moles/volume] Serum or Plasma^LN||{potassium}|mmol/L|3.5-5.0|N|||F|||20261129074500",
                "OBX|2|NM|2951-2^Sodium [Moles/volume] Serum or Plasma^LN||139|mmol/L|136-145|N|||F|||20261129074500",
                "OBX|3|ST|8251-1^Commentaire^LN||Prélèvement hémolysé, à contrôler||||||F",
            ]
        )
        + CR
    )
