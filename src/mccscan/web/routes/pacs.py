"""Send a finished scan to the configured PACS: its DICOM SR and parametric map, stored with
STOW-RS into the scanned image's study (and the image too when the PACS lacks it)."""

from __future__ import annotations

import pydicom
from fastapi import APIRouter, HTTPException

from mccscan.dicom_results import write_dicom_results
from mccscan.dicomweb import PacsError, connect, send_with_image
from mccscan.errors import InputError
from mccscan.scan import ScanResult
from mccscan.web.deps import DoneDep, SettingsDep, StoreDep
from mccscan.web.schemas import ERROR_RESPONSES, SentToPacs

router = APIRouter(prefix="/api/scans", tags=["pacs"])


@router.post("/{scan_id}/pacs", response_model=SentToPacs, responses=ERROR_RESPONSES)
def send_to_pacs(record: DoneDep, store: StoreDep, settings: SettingsDep) -> SentToPacs:
    """Store the scan's SR (the clusters) and parametric map (the cluster score) in the PACS."""
    if not settings.pacs_url:
        raise HTTPException(409, "no PACS is configured: start the server with --pacs URL")
    upload = store.upload_path(record.id)
    result = ScanResult.from_dict(store.load_result(record.id))
    folder = store.folder(record.id)
    try:
        written = write_dicom_results(result, upload, folder, "result")
    except InputError as exc:
        raise HTTPException(409, f"{record.filename} is not a DICOM image; only DICOM scans can be sent to a PACS, "
                                 "since the results must reference the image") from exc
    try:
        client = connect(settings.pacs_url)
        (sr_uid, map_uid), image_sent = send_with_image(client, upload, [written["sr"], written["pmap"]])
    except PacsError as exc:
        raise HTTPException(502, str(exc)) from exc
    study = pydicom.dcmread(upload, stop_before_pixels=True).StudyInstanceUID
    return SentToPacs(pacs=settings.pacs_url, study_instance_uid=study, sr_sop_instance_uid=sr_uid,
                      map_sop_instance_uid=map_uid, image_sent=image_sent)
