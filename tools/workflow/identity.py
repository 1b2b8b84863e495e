"""The right patient and the right images: checks at fetch, before anything is segmented.

An ImagingStudy in the EHR names a patient and, by its Study Instance UID, images in the PACS.
Nothing ties the two together but these checks: every instance retrieved must belong to the
study and series asked for, and its DICOM PatientID (with IssuerOfPatientID where both sides
name an issuer) must be the FHIR Patient's identifier in the configured system. Otherwise one
patient's lung volumes would be filed in another patient's chart.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom import Dataset

from tools.ids import check_dicom_uid
from tools.workflow.failure import StudyFailure
from tools.workflow.records import DicomPatient, StudyRecord


def _text(ds: Dataset, keyword: str) -> str | None:
    value = str(ds.get(keyword, "") or "").strip()
    return value or None


def check_membership(
    datasets: Sequence[Dataset], study_uid: str, series_uid: str, listed_sop_uids: Sequence[str]
) -> None:
    """Every retrieved instance is of the study and series asked for, and they are exactly the listed ones.

    Runs before any file is named after a SOP Instance UID (each one is checked as a UID here).
    """
    got: set[str] = set()
    for ds in datasets:
        sop = check_dicom_uid(ds.get("SOPInstanceUID"), f"a SOP Instance UID the PACS sent in series {series_uid}")
        where = (_text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID"))
        if where != (study_uid, series_uid):
            raise StudyFailure(
                f"the PACS sent instance {sop} of study {where[0]}, series {where[1]} when asked for series "
                f"{series_uid} of study {study_uid}; nothing was kept. Check the PACS before running the study again."
            )
        got.add(sop)
    listed = set(listed_sop_uids)
    if got != listed:
        raise StudyFailure(
            f"series {series_uid} of study {study_uid}: the PACS sent {len(got)} instance(s), "
            f"{len(got - listed)} of them not in its own listing of {len(listed)}, {len(listed - got)} listed ones "
            "missing; nothing was kept. Check the series in the PACS, then run the study again."
        )


def series_patient(datasets: Sequence[Dataset], series_uid: str) -> DicomPatient:
    """The one patient every instance of the series names; refused when there is none or more than one."""
    seen = {(_text(ds, "PatientID"), _text(ds, "IssuerOfPatientID")) for ds in datasets}
    if len(seen) != 1 or None in {pid for pid, _ in seen}:
        shown = ", ".join(sorted(f"{pid or '(none)'}" + (f" (issuer {iss})" if iss else "") for pid, iss in seen))
        raise StudyFailure(
            f"series {series_uid} does not name one patient: its instances carry PatientID {shown or '(none)'}. "
            "Correct the DICOM headers in the PACS, then run the study again."
        )
    [(patient_id, issuer)] = seen
    assert patient_id is not None
    name = _text(datasets[0], "PatientName") if datasets else None
    return DicomPatient(patient_id=patient_id, issuer=issuer, name=name.replace("^", " ").strip() if name else None)


def check_same_patient(study: StudyRecord, dicom: DicomPatient, series_uid: str, identifier_system: str) -> None:
    """The DICOM patient is the FHIR Patient of the ImagingStudy, or the study is refused naming both."""
    fhir_side = (
        f"{study.patient_reference or f'ImagingStudy/{study.imaging_study_id} (no patient)'} identifier "
        f"{study.patient_id or '(none)'} in system {identifier_system}"
        + (f", issuer {study.patient_issuer}" if study.patient_issuer else "")
    )
    dicom_side = f"DICOM PatientID {dicom.patient_id}" + (f", IssuerOfPatientID {dicom.issuer}" if dicom.issuer else "")
    # The issuer is compared only where both name one: FHIR's Identifier.assigner is often left out.
    issuers_differ = bool(study.patient_issuer and dicom.issuer and study.patient_issuer != dicom.issuer)
    if study.patient_id != dicom.patient_id or issuers_differ:
        raise StudyFailure(
            f"wrong patient: ImagingStudy/{study.imaging_study_id} is for FHIR {fhir_side}, but the images of "
            f"study {study.study_instance_uid} (series {series_uid}) are of {dicom_side}. Nothing was segmented. "
            "Correct the ImagingStudy's patient or its Study Instance UID identifier, then run the study again."
        )
