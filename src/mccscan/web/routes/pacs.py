"""Send a finished scan to the configured PACS: its DICOM SR and parametric map, stored with
STOW-RS into the scanned image's study (and the image too when the PACS lacks it)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from mccscan.dicomweb import PacsError, connect, send_scan
from mccscan.errors import InputError
from mccscan.scan import ScanResult
from mccscan.web.deps import DoneDep, SettingsDep, StoreDep
from mccscan.web.schemas import ERROR_RESPONSES, SentToPacs

router = APIRouter(prefix="/api/scans", tags=["pacs"])


@router.post("/{scan_id}/pacs", response_model=SentToPacs, responses=ERROR_RESPONSES)
def send_to_pacs(record: DoneDep, store: StoreDep, settings: SettingsDep) -> SentToPacs:
    """Store the scan's SR (the clusters) and parametric map (the cluster score) in the PACS;
    sending again stores the same two instances."""
    if not settings.pacs_url:
        raise HTTPException(409, "no PACS is configured: start the server with --pacs URL")
    result, upload = ScanResult.from_dict(store.load_result(record.id)), store.upload_path(record.id)
    try:
        sent = send_scan(connect(settings.pacs_url), result, upload, store.folder(record.id), "result")
    except InputError as exc:  # not a DICOM, a DICOM without UIDs, an older result
        problem = str(exc).replace(str(upload), record.filename)  # the server's paths stay private
        raise HTTPException(409, f"{problem}; only a DICOM scan can be sent to a PACS") from exc
    except PacsError as exc:
        raise HTTPException(502, str(exc)) from exc
    return SentToPacs(pacs=settings.pacs_url, study_instance_uid=sent.study, sr_sop_instance_uid=sent.sr,
                      map_sop_instance_uid=sent.pmap, image_sent=sent.image_sent)
