"""FHIR R4 resources describing DICOM data: Patient and ImagingStudy built from headers.

DICOM UIDs become identifiers with system ``urn:dicom:uid`` and value ``urn:oid:<uid>``
(FHIR R4 ImagingStudy.identifier guidance). Modality and SOP Class codings use the DICOM
code system (PS3.16 CID 29) and ``urn:ietf:rfc:3986`` respectively.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.imagingstudy import ImagingStudy, ImagingStudySeries, ImagingStudySeriesInstance
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.reference import Reference
from pydicom import Dataset

from tools.fhir.search_values import token

DICOM_UID_SYSTEM = "urn:dicom:uid"
DICOM_CODE_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
URI_SYSTEM = "urn:ietf:rfc:3986"

_GENDER = {"M": "male", "F": "female", "O": "other"}


def uid_identifier(uid: str) -> Identifier:
    return Identifier(system=DICOM_UID_SYSTEM, value=f"urn:oid:{uid}")


def uid_search_token(uid: str) -> str:
    """The token for `identifier=` searches and If-None-Exist on a DICOM UID (escaped: one value)."""
    return token(DICOM_UID_SYSTEM, f"urn:oid:{uid}")


def _dicom_date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return datetime.strptime(str(value)[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _dicom_datetime(date_value: str | None, time_value: str | None) -> str | None:
    day = _dicom_date(date_value)
    if day is None:
        return None
    digits = "".join(ch for ch in str(time_value or "") if ch.isdigit())[:6].ljust(6, "0")
    return f"{day.isoformat()}T{digits[0:2]}:{digits[2:4]}:{digits[4:6]}Z"


def patient_from_dicom(ds: Dataset, identifier_system: str) -> Patient:
    """A Patient from the DICOM Patient Module (PS3.3 C.7.1.1)."""
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if not patient_id:
        raise ValueError(
            f"series {ds.get('SeriesInstanceUID', '?')} has no PatientID, so no FHIR Patient can be "
            "matched or created. Fix the DICOM header (PatientID, 0010,0020) and seed again."
        )
    name = ds.get("PatientName")
    names = []
    if name:
        names.append(
            HumanName(
                family=name.family_name or None,
                given=[g for g in [name.given_name, name.middle_name] if g] or None,
                text=str(name).replace("^", " ").strip() or None,
            )
        )
    return Patient(
        identifier=[Identifier(system=identifier_system, value=patient_id)],
        name=names or None,
        gender=_GENDER.get(str(ds.get("PatientSex", "")).upper(), "unknown"),
        birthDate=_dicom_date(ds.get("PatientBirthDate")),
    )


def _series_entry(datasets: Sequence[Dataset]) -> ImagingStudySeries:
    first = datasets[0]
    ordered = sorted(datasets, key=lambda d: int(d.get("InstanceNumber", 0) or 0))
    body_part = str(first.get("BodyPartExamined", "") or "").strip()
    return ImagingStudySeries(
        uid=str(first.SeriesInstanceUID),
        number=int(first.SeriesNumber) if first.get("SeriesNumber") not in (None, "") else None,
        modality=Coding(system=DICOM_CODE_SYSTEM, code=str(first.Modality)),
        description=str(first.get("SeriesDescription", "") or "") or None,
        numberOfInstances=len(datasets),
        bodySite=Coding(display=body_part) if body_part else None,
        instance=[
            ImagingStudySeriesInstance(
                uid=str(ds.SOPInstanceUID),
                sopClass=Coding(system=URI_SYSTEM, code=f"urn:oid:{ds.SOPClassUID}"),
                number=int(ds.InstanceNumber) if ds.get("InstanceNumber") not in (None, "") else None,
            )
            for ds in ordered
        ],
    )


def imaging_study_from_dicom(
    series: Sequence[Sequence[Dataset]], patient_reference: str, status: str = "registered"
) -> ImagingStudy:
    """An ImagingStudy for one DICOM study given its series (each a list of instances)."""
    if not series or not all(series):
        raise ValueError("an ImagingStudy needs at least one series with at least one instance")
    first = series[0][0]
    study_uids = {str(ds.StudyInstanceUID) for s in series for ds in s}
    if len(study_uids) != 1:
        raise ValueError(
            f"the series given belong to {len(study_uids)} studies ({', '.join(sorted(study_uids))}); "
            "build one ImagingStudy per Study Instance UID."
        )
    entries = [_series_entry(s) for s in series]
    modalities = sorted({e.modality.code for e in entries})
    return ImagingStudy(
        identifier=[uid_identifier(str(first.StudyInstanceUID))],
        status=status,
        subject=Reference(reference=patient_reference),
        started=_dicom_datetime(first.get("StudyDate"), first.get("StudyTime")),
        modality=[Coding(system=DICOM_CODE_SYSTEM, code=m) for m in modalities],
        description=str(first.get("StudyDescription", "") or "") or None,
        numberOfSeries=len(entries),
        numberOfInstances=sum(e.numberOfInstances or 0 for e in entries),
        series=entries,
    )
