"""DICOM images as 8-bit grayscale, through pydicom (the optional ``[dicom]`` extra).

``read_dicom(path)`` returns a PIL ``"L"`` image as a radiologist's viewer would first show it:

1. The file is read with ``pydicom.dcmread``. Files without the 128-byte preamble and ``DICM``
   prefix (old ACR-NEMA style) are refused by a plain read; only then is the file read again
   with ``force=True``, and the file must still have pixel data. When such a file has no file
   meta information, its transfer syntax is taken from the encoding pydicom detected
   (implicit or explicit VR, little or big endian).
2. Refused with a clear error: no pixel data (e.g. a structured report), more than one frame,
   float pixel data, and compressed pixel data whose decoder plugin is not installed (the message
   names the plugin to install, e.g. ``pylibjpeg-openjpeg`` for JPEG 2000).
3. Grayscale (MONOCHROME1/2): the Modality LUT (rescale slope/intercept or LUT) is applied with
   pydicom's ``apply_modality_lut``, then the first VOI transform with ``apply_voi_lut`` (a VOI
   LUT if present, else the first Window Center/Width, LINEAR/LINEAR_EXACT/SIGMOID). The VOI
   output's full range is mapped linearly onto 0-255 (so a window's lower edge is 0 and its
   upper edge 255). Without any VOI transform, 8-bit unsigned data without a rescale is kept as
   is; anything else (10-16 bit, signed, rescaled) is stretched from its minimum to its maximum.
4. MONOCHROME1 (and Presentation LUT Shape ``INVERSE``) is inverted, so that for every file
   air/lungs are dark and bone bright.
5. Colour data (RGB, YBR, palette) is converted to RGB by pydicom and then to ``"L"`` with PIL's
   weights; VOI transforms are not applied to colour data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from ..errors import DatasetError

INSTALL_HINT = 'pip install "/path/to/pytest-medrobust[dicom]" (pydicom, pylibjpeg, pylibjpeg-openjpeg)'

# Which packages decode which compressed transfer syntaxes (by UID prefix / value).
_PLUGINS_BY_SYNTAX = {
    "1.2.840.10008.1.2.4.90": "pylibjpeg with pylibjpeg-openjpeg (or Pillow built with OpenJPEG)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg with pylibjpeg-openjpeg (or Pillow built with OpenJPEG)",
    "1.2.840.10008.1.2.4.201": "pylibjpeg with pylibjpeg-openjpeg >= 2.0 (HTJ2K)",
    "1.2.840.10008.1.2.4.202": "pylibjpeg with pylibjpeg-openjpeg >= 2.0 (HTJ2K)",
    "1.2.840.10008.1.2.4.203": "pylibjpeg with pylibjpeg-openjpeg >= 2.0 (HTJ2K)",
    "1.2.840.10008.1.2.4.50": "Pillow, or pylibjpeg with pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg with pylibjpeg-libjpeg (or Pillow for 8-bit)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg with pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg with pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg with pylibjpeg-libjpeg, or pyjpegls",
    "1.2.840.10008.1.2.4.81": "pylibjpeg with pylibjpeg-libjpeg, or pyjpegls",
    "1.2.840.10008.1.2.5": "pylibjpeg with pylibjpeg-rle (pydicom's own RLE decoder should suffice)",
}


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError as exc:  # the optional extra is not installed
        raise DatasetError(f"reading DICOM files needs pydicom: {INSTALL_HINT}") from exc
    return pydicom


def _read(pydicom: Any, source: Path | BinaryIO, name: str) -> tuple[Any, bool]:
    """(dataset, whether it took the force=True fallback)."""
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(source), False
    except InvalidDicomError:
        pass  # no preamble/DICM prefix: maybe ACR-NEMA style; retry below with force=True
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on damaged files
        raise DatasetError(f"{name}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(source, Path):
        source.seek(0)
    try:
        ds = pydicom.dcmread(source, force=True)
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(f"{name}: not a DICOM file ({type(exc).__name__}: {exc})") from exc
    if len(ds) == 0:
        raise DatasetError(f"{name}: not a DICOM file (no DICOM elements found)")
    return ds, True


def _ensure_transfer_syntax(pydicom: Any, ds: Any) -> None:
    """Files without file meta (ACR-NEMA style): take the syntax from the detected encoding."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        implicit, little = True, True
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _check_decoder(name: str, ds: Any) -> None:
    from pydicom.pixels import get_decoder

    uid = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise DatasetError(
            f"{name}: pixel data in transfer syntax {uid} ({uid.name}) cannot be decoded by pydicom"
        ) from exc
    if decoder.is_available:
        return
    plugins = _PLUGINS_BY_SYNTAX.get(str(uid), "a pydicom pixel data plugin")
    missing = "; ".join(decoder.missing_dependencies) or "no plugin installed"
    raise DatasetError(
        f"{name}: compressed pixel data ({uid.name}) needs a decoder plugin that is not installed: "
        f"install {plugins} (pydicom reports: {missing}); e.g. {INSTALL_HINT}"
    )


def _check_size(name: str, ds: Any) -> None:
    """Refuse a pixel array larger than ``subset.MAX_IMAGE_PIXELS`` by its header, before
    ``pixel_array`` allocates it (compressed data can claim far more pixels than its bytes)."""
    from .subset import check_pixels

    try:
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{name}: Rows/Columns are not numbers ({exc})") from exc
    try:
        check_pixels(columns, rows)
    except DatasetError as exc:
        raise DatasetError(f"{name}: {exc}") from None


def _to_uint8(ds: Any, arr: np.ndarray) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    rescaled = "RescaleSlope" in ds or "RescaleIntercept" in ds or bool(ds.get("ModalityLUTSequence"))
    values = apply_modality_lut(arr, ds)
    voi_seq = ds.get("VOILUTSequence")
    has_lut = bool(voi_seq) and voi_seq[0].get("LUTDescriptor") is not None and voi_seq[0].get("LUTData") is not None
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if has_lut or has_window:
        if has_lut:
            # The output range is the LUT's own range: map every possible input through it.
            n_entries, first = int(voi_seq[0].LUTDescriptor[0]) or 2**16, int(voi_seq[0].LUTDescriptor[1])
            values = np.asarray(values).astype(np.int64) if not np.issubdtype(values.dtype, np.integer) else values
            probe = apply_voi_lut(np.arange(first, first + n_entries, dtype=np.int64), ds)
        else:
            # A window maps onto a fixed output range; pydicom's range depends on bit depth and
            # rescale, so read it back by pushing values far below and above the window through.
            probe = apply_voi_lut(np.array([-1e15, 1e15]), ds)
        out = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
        lo, hi = float(np.min(probe)), float(np.max(probe))
        if not hi > lo:
            lo, hi = float(out.min()), float(out.max())
    else:
        out = np.asarray(values, dtype=np.float64)
        unsigned_8bit = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16) <= 8 and not int(
            ds.get("PixelRepresentation", 0) or 0
        )
        if unsigned_8bit and not rescaled:
            lo, hi = 0.0, 255.0
        else:
            lo, hi = float(out.min()), float(out.max())
    if hi > lo:
        scaled = (np.clip(out, lo, hi) - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(out)
    return np.round(scaled).astype(np.uint8)


def read_dicom(source: Path | str | BinaryIO, *, name: str | None = None) -> Image.Image:
    """One DICOM image (a path or a binary file object) as an 8-bit grayscale PIL image.

    Raises :class:`~pytest_medrobust.errors.DatasetError` naming ``name`` (default: the path)
    and the reason.
    """
    pydicom = _pydicom()
    if isinstance(source, str):
        source = Path(source)
    name = name or str(source if isinstance(source, Path) else getattr(source, "name", "<DICOM data>"))
    ds, forced = _read(pydicom, source, name)
    if forced and "PixelData" not in ds:
        raise DatasetError(
            f"{name}: not a DICOM file (no 'DICM' header, and no pixel data when read as headerless ACR-NEMA)"
        )
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise DatasetError(f"{name}: float pixel data is not supported (expected an integer radiograph)")
        what = ds.get("Modality") or ds.get("SOPClassUID", "unknown")
        raise DatasetError(f"{name}: the DICOM file has no pixel data (Modality/SOP class: {what}); not an image")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DatasetError(
            f"{name}: multi-frame DICOM ({frames} frames) is not supported; "
            "export the one frame to use as a single-frame file"
        )
    _check_size(name, ds)
    _ensure_transfer_syntax(pydicom, ds)
    _check_decoder(name, ds)
    try:
        arr = ds.pixel_array
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise RuntimeError/ValueError/...
        raise DatasetError(f"{name}: cannot decode the pixel data ({type(exc).__name__}: {exc})") from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 1 and photometric in ("MONOCHROME1", "MONOCHROME2"):
        if arr.ndim != 2:
            raise DatasetError(f"{name}: expected a 2-D grayscale image, got pixel array of shape {arr.shape}")
        try:
            pixels = _to_uint8(ds, arr)
        except DatasetError:
            raise
        except Exception as exc:  # noqa: BLE001 - bad LUT/window values
            raise DatasetError(
                f"{name}: cannot apply the modality/VOI transforms ({type(exc).__name__}: {exc})"
            ) from exc
        inverse = str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
        if photometric == "MONOCHROME1" or inverse:
            pixels = 255 - pixels
        return Image.fromarray(pixels, mode="L")
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise DatasetError(f"{name}: unsupported photometric interpretation {photometric} with shape {arr.shape}")
    if arr.dtype != np.uint8:
        top = float(arr.max()) or 1.0
        arr = np.round(arr.astype(np.float64) * (255.0 / top)).astype(np.uint8)
    return Image.fromarray(arr, mode="RGB").convert("L")
