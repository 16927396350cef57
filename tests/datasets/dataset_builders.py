"""Builders that write each dataset's real on-disk layout, small, into tmp folders.

conftest.py exposes them as fixtures; tests may also import them directly."""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
REAL_DATA_ENV = "MEDROBUST_REAL_DATA"


def real_data_root() -> Path:
    env = os.environ.get(REAL_DATA_ENV)
    return Path(env) if env else (REPO / ".." / "shared" / "real-data").resolve()


# --- images -----------------------------------------------------------------------------------


def chest_like(h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    """A small uint8 image with structure (two dark 'lungs' on a bright body), unique per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.full((h, w), 200.0)
    for cx in (w * 0.3, w * 0.7):
        img -= 140 * (((xx - cx) / (w * 0.17)) ** 2 + ((yy - h * 0.5) / (h * 0.33)) ** 2 < 1)
    img += rng.normal(0, 8, size=(h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (40, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(chest_like(*size, seed=seed), mode="L")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, format="JPEG", quality=90)
    elif path.suffix.lower() in (".dcm", ".dicom"):
        write_dicom(path, np.asarray(im))
    else:
        im.save(path)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# --- DICOM ------------------------------------------------------------------------------------


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    voi_lut: tuple[list[int], int, int] | None = None,
    frames: int | None = None,
    with_pixels: bool = True,
    file_meta: bool = True,
    compress: str | None = None,
    presentation_lut: str | None = None,
) -> Path:
    """A minimal DX DICOM. ``file_meta=False`` writes ACR-NEMA style: no preamble, no meta,
    implicit VR little endian. ``compress``: a transfer syntax UID to compress to."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.ViewPosition = "PA"
    if with_pixels:
        arr = np.ascontiguousarray(pixels)
        n_frames = frames or 1
        if n_frames > 1:
            arr = np.stack([arr] * n_frames)
            ds.NumberOfFrames = n_frames
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = arr.dtype.itemsize * 8
        ds.BitsStored = bits_stored or ds.BitsAllocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        ds.PixelData = arr.tobytes()
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = rescale
        if voi_lut is not None:
            data, first, nbits = voi_lut
            item = Dataset()
            item.add_new(0x00283002, "US", [len(data), first, nbits])  # LUTDescriptor
            item.add_new(0x00283006, "US", list(data))  # LUTData
            ds.VOILUTSequence = [item]
        if presentation_lut is not None:
            ds.PresentationLUTShape = presentation_lut
    if not file_meta:
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
        return path
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if compress is not None:
        ds.compress(compress, encoding_plugin="pylibjpeg")
    ds.save_as(path, enforce_file_format=True)
    return path


# --- MIMIC-CXR-JPG ----------------------------------------------------------------------------

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough  // eval for pneumonia

 COMPARISON:  None.

 FINDINGS:

 {findings}

 IMPRESSION:

 {impression}
"""


def _gz_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(gzip.compress(buf.getvalue().encode()))


def build_mimic(root: Path, studies: list[dict] | None = None, *, reports_in: Path | None = None) -> Path:
    """Write MIMIC-CXR-JPG: split + metadata .csv.gz, files/pXX/pN/sN/<dicom>.jpg, sN.txt reports.

    Each study: {"subject": "10000032", "study": "50414267", "split": "test",
    "images": [("dicom_id", "PA"), ...], "findings": str, "impression": str,
    "report": str (overrides the template) or None (no report file)}.
    """
    if studies is None:
        studies = default_mimic_studies()
    root.mkdir(parents=True, exist_ok=True)
    reports_root = reports_in or root
    split_rows, meta_rows = [], []
    seed = 0
    for st in studies:
        folder = Path("files") / f"p{st['subject'][:2]}" / f"p{st['subject']}"
        for dicom_id, view in st["images"]:
            split_rows.append([dicom_id, st["study"], st["subject"], st.get("split", "test")])
            meta_rows.append([dicom_id, st["subject"], st["study"], "CHEST (PA AND LAT)", view, "3056", "2544"])
            if st.get("write_images", True):
                write_image(root / folder / f"s{st['study']}" / f"{dicom_id}.jpg", seed=seed)
            seed += 1
        report = st.get(
            "report", MIMIC_REPORT.format(findings=st.get("findings", ""), impression=st.get("impression", ""))
        )
        if report is not None:
            txt = reports_root / folder / f"s{st['study']}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text(report)
    _gz_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split_rows)
    _gz_csv(
        root / "mimic-cxr-2.0.0-metadata.csv.gz",
        ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns"],
        meta_rows,
    )
    return root


def default_mimic_studies() -> list[dict]:
    return [
        {
            "subject": "10000032",
            "study": "50414267",
            "images": [
                ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA"),
                ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL"),
            ],
            "findings": "There is no focal consolidation, pleural effusion or pneumothorax.\n Heart size is normal.",
            "impression": "No acute cardiopulmonary process.",
        },
        {
            "subject": "10000032",
            "study": "53189527",
            "images": [("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "AP")],
            "findings": "Lungs are clear.",
            "impression": "No acute cardiopulmonary process.",
        },
        {
            "subject": "11000011",
            "study": "51029426",
            "images": [
                ("3f3a1c12-11aa22bb-33cc44dd-55ee66ff-77889900", "LATERAL"),
                ("4e4b2d23-22bb33cc-44dd55ee-66ff7700-88990011", "PA"),
            ],
            "findings": "Moderate right pleural effusion.",
            "impression": "Right pleural effusion.",
        },
        {
            "subject": "12000022",
            "study": "52000001",
            "images": [("5a5c3e34-33cc44dd-55ee66ff-77008811-99001122", "PA")],
            "findings": "Enlarged cardiac silhouette.",
            "impression": "Cardiomegaly.",
            "split": "train",
        },
    ]


# --- OpenI ------------------------------------------------------------------------------------

OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{n}"/>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">XXXX-year-old with cough</AbstractText>
            {findings}
            {impression}
         </Abstract>
      </Article>
   </MedlineCitation>
   {images}
</eCitation>
"""


def _abstract(label: str, text: str | None) -> str:
    return f'<AbstractText Label="{label}"/>' if not text else f'<AbstractText Label="{label}">{text}</AbstractText>'


def build_openi(root: Path, studies: list[dict] | None = None) -> Path:
    """Write ``NLMCXR_png/<id>.png`` and ``ecgen-radiology/<n>.xml``.

    Each study: {"n": 7, "images": ["CXR7_IM-2263-1001", ...], "findings": str, "impression": str,
    "missing": [image ids not written], "xml": raw text overriding the template}.
    """
    if studies is None:
        studies = default_openi_studies()
    (root / "NLMCXR_png").mkdir(parents=True, exist_ok=True)
    (root / "ecgen-radiology").mkdir(parents=True, exist_ok=True)
    seed = 100
    for st in studies:
        images = "\n".join(
            f'<parentImage id="{i}"><figureId>F{k + 1}</figureId><panel type="single">'
            f"<url>/hadoop/storage/radiology/extract/{i}.jpg</url></panel></parentImage>"
            for k, i in enumerate(st["images"])
        )
        xml = st.get("xml") or OPENI_XML.format(
            n=st["n"],
            findings=_abstract("FINDINGS", st.get("findings")),
            impression=_abstract("IMPRESSION", st.get("impression")),
            images=images,
        )
        (root / "ecgen-radiology" / f"{st['n']}.xml").write_text(xml, encoding="utf-8")
        for image_id in st["images"]:
            if image_id not in st.get("missing", ()):
                write_image(root / "NLMCXR_png" / f"{image_id}.png", seed=seed)
            seed += 1
    return root


def default_openi_studies() -> list[dict]:
    return [
        {
            "n": 1,
            "images": ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"],
            "findings": "The cardiac silhouette and mediastinum size are within normal limits.",
            "impression": "Normal chest x-XXXX.",
        },
        {
            "n": 2,
            "images": ["CXR2_IM-0652-1001"],
            "findings": "Borderline cardiomegaly.  Midline sternotomy XXXX.",
            "impression": "No acute pulmonary findings.",
        },
        {
            "n": 10,
            "images": ["CXR10_IM-0002-1001", "CXR10_IM-0002-2001"],
            "findings": None,
            "impression": "No acute cardiopulmonary abnormality.",
        },
        {"n": 11, "images": [], "findings": "No images for this study.", "impression": "Normal."},
    ]


# --- CheXpert 5x200 ---------------------------------------------------------------------------

CHEXPERT_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


def build_chexpert(
    root: Path, per_class: int = 2, *, one_hot: bool = True, csv_name: str = "chexpert_5x200.csv"
) -> Path:
    """``root/CheXpert-v1.0-small/train/patientNNNNN/study1/view1_frontal.jpg`` and a CSV whose
    paths start with ``CheXpert-v1.0-small/`` (as the published 5x200 CSVs do)."""
    root.mkdir(parents=True, exist_ok=True)
    header = ["Path", *CHEXPERT_CLASSES] if one_hot else ["Path", "label"]
    rows = []
    patient = 1
    for ci, cls in enumerate(CHEXPERT_CLASSES):
        for _ in range(per_class):
            rel = f"CheXpert-v1.0-small/train/patient{patient:05d}/study1/view1_frontal.jpg"
            write_image(root / rel, seed=1000 + patient)
            rows.append([rel, *["1.0" if k == ci else "0.0" for k in range(5)]] if one_hot else [rel, cls])
            patient += 1
    with open(root / csv_name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return root


# --- manifest ---------------------------------------------------------------------------------


def build_manifest(root: Path, n: int = 6, *, suffixes: tuple[str, ...] = (".png", ".jpg", ".dcm")) -> Path:
    """``root/manifest.csv`` with ``images/img<i><suffix>``, cycling PNG/JPEG/DICOM."""
    rows = []
    for i in range(n):
        rel = f"images/img{i}{suffixes[i % len(suffixes)]}"
        write_image(root / rel, seed=i)
        rows.append(
            {"id": f"r{i}", "image": rel, "report": f"Report   number {i}.\n No acute process.", "split": "test"}
        )
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "image", "report", "split"])
        w.writeheader()
        w.writerows(rows)
    return root / "manifest.csv"
