"""read_dicom: photometric, VOI/windowing, bit depth, and every refusal with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pytest_medrobust.datasets import read_image  # noqa: E402
from pytest_medrobust.datasets.dicom import read_dicom  # noqa: E402
from pytest_medrobust.errors import DatasetError  # noqa: E402

from dataset_builders import chest_like, write_dicom  # noqa: E402


def ramp16(h: int = 32, w: int = 48, top: int = 4095) -> np.ndarray:
    return np.tile(np.linspace(0, top, w).round().astype(np.uint16), (h, 1))


def test_monochrome2_8bit_kept_as_is(tmp_path):
    pixels = chest_like(40, 48)
    im = read_dicom(write_dicom(tmp_path / "a.dcm", pixels))
    assert im.mode == "L" and im.size == (48, 40)
    assert np.array_equal(np.asarray(im), pixels)


def test_monochrome1_is_inverted(tmp_path):
    pixels = chest_like(40, 48)
    mono2 = np.asarray(read_dicom(write_dicom(tmp_path / "m2.dcm", pixels)))
    mono1 = np.asarray(read_dicom(write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1")))
    assert np.array_equal(mono1, 255 - mono2)


def test_16bit_without_window_is_stretched_to_full_range(tmp_path):
    im = np.asarray(read_dicom(write_dicom(tmp_path / "a.dcm", ramp16(), bits_stored=12)))
    assert im.dtype == np.uint8 and im.min() == 0 and im.max() == 255
    assert np.all(np.diff(im[0].astype(int)) >= 0)  # monotone ramp stays monotone


def test_window_maps_its_edges_to_0_and_255(tmp_path):
    # Window centre 2048, width 1024: values <= ~1536 black, >= ~2560 white, linear between.
    arr = np.asarray(read_dicom(write_dicom(tmp_path / "w.dcm", ramp16(), bits_stored=12, window=(2048, 1024))))[0]
    values = np.linspace(0, 4095, 48).round()
    assert np.all(arr[values <= 1500] == 0)
    assert np.all(arr[values >= 2600] == 255)
    middle = arr[(values > 1600) & (values < 2500)]
    assert middle.size and np.all((middle > 0) & (middle < 255))


def test_rescale_then_window(tmp_path):
    # Stored 0..4095, slope 2, intercept -1000 -> -1000..7190; window on the rescaled values.
    path = write_dicom(tmp_path / "r.dcm", ramp16(), bits_stored=12, rescale=(2, -1000), window=(3000, 2000))
    arr = np.asarray(read_dicom(path))[0]
    rescaled = np.linspace(0, 4095, 48).round() * 2 - 1000
    assert np.all(arr[rescaled <= 1950] == 0) and np.all(arr[rescaled >= 4050] == 255)


def test_voi_lut_sequence_is_applied(tmp_path):
    # A LUT that inverts 0..4095 into 4095..0 (12-bit output).
    lut = list(range(4095, -1, -1))
    arr = np.asarray(read_dicom(write_dicom(tmp_path / "l.dcm", ramp16(), bits_stored=12, voi_lut=(lut, 0, 12))))[0]
    assert arr[0] == 255 and arr[-1] == 0
    assert np.all(np.diff(arr.astype(int)) <= 0)


def test_presentation_lut_inverse_inverts_monochrome2(tmp_path):
    pixels = chest_like()
    arr = np.asarray(read_dicom(write_dicom(tmp_path / "i.dcm", pixels, presentation_lut="INVERSE")))
    assert np.array_equal(arr, 255 - pixels)


def test_acr_nema_without_preamble_is_read_with_force(tmp_path):
    pixels = chest_like()
    path = write_dicom(tmp_path / "acr.dcm", pixels, file_meta=False)
    assert path.read_bytes()[128:132] != b"DICM"
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(path)  # a plain read refuses it; read_dicom falls back to force=True
    assert np.array_equal(np.asarray(read_dicom(path)), pixels)


def test_jpeg2000_monochrome1_16bit(tmp_path):
    from pydicom.uid import JPEG2000Lossless

    pixels = ramp16(top=1023)
    path = write_dicom(
        tmp_path / "j2k.dcm", pixels, bits_stored=10, photometric="MONOCHROME1", compress=JPEG2000Lossless
    )
    arr = np.asarray(read_dicom(path))[0]
    assert arr[0] == 255 and arr[-1] == 0  # inverted: the lowest stored value is white


def test_read_image_delegates_dcm_suffix(tmp_path):
    pixels = chest_like()
    assert np.array_equal(np.asarray(read_image(write_dicom(tmp_path / "x.dcm", pixels))), pixels)


def test_no_pixel_data_is_refused(tmp_path):
    path = write_dicom(tmp_path / "sr.dcm", chest_like(), with_pixels=False)
    with pytest.raises(DatasetError, match=r"sr\.dcm: the DICOM file has no pixel data"):
        read_dicom(path)


def test_multi_frame_is_refused(tmp_path):
    path = write_dicom(tmp_path / "mf.dcm", chest_like(), frames=3)
    with pytest.raises(DatasetError, match=r"mf\.dcm: multi-frame DICOM \(3 frames\) is not supported"):
        read_dicom(path)


def test_not_a_dicom_file(tmp_path):
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"this is not a DICOM file at all")
    with pytest.raises(DatasetError, match=r"junk\.dcm: not a DICOM file"):
        read_dicom(path)


def test_missing_jpeg2000_plugin_names_it(tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless

    path = write_dicom(tmp_path / "j2k.dcm", ramp16(), bits_stored=12, compress=JPEG2000Lossless)
    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0")})
    with pytest.raises(
        DatasetError, match=r"j2k\.dcm: compressed pixel data .*JPEG 2000.*install .*pylibjpeg-openjpeg"
    ):
        read_dicom(path)


def test_missing_jpeg_ls_plugin_names_it(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here; the missing-plugin path is covered by the JPEG 2000 test")
    path = write_dicom(tmp_path / "jls.dcm", chest_like())
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\0" * 32])
    ds.save_as(path)
    with pytest.raises(DatasetError, match=r"jls\.dcm: .*JPEG-LS.*(pyjpegls|pylibjpeg-libjpeg)"):
        read_dicom(path)


def test_missing_pydicom_says_how_to_install(tmp_path, monkeypatch):
    import sys

    path = write_dicom(tmp_path / "a.dcm", chest_like())
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(DatasetError, match=r'needs pydicom: pip install "/path/to/pytest-medrobust\[dicom\]"'):
        read_dicom(path)
