"""MedCLIP and CXR-CLIP check their BERT tokenizer against the checkpoint before any report is
encoded: the folder has a vocabulary file, the vocabulary has one entry per word-embedding row,
and clinical words are not [UNK]. Each case is a folder a user could plausibly point
``text_model_dir`` at; without the checks each loaded silently or failed mid-run."""

from __future__ import annotations

import shutil

import pytest

from pytest_medrobust.errors import ModelLoadError
from pytest_medrobust.models.cxr_clip import load_cxr_clip
from pytest_medrobust.models.medclip import load_medclip

from .test_cxr_clip import build, save_tar, upstream_config
from .test_medclip import build_upstream

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, bert_dir, swin_dir, swin_to_upstream):
    import torch

    d = tmp_path_factory.mktemp("bert-checks")
    state = build_upstream("vit", bert_dir, swin_dir, swin_to_upstream)[0]
    torch.save(state, d / "pytorch_model.bin")
    tar = save_tar(d / "swint_m.tar", build("swin", bert_dir, swin_dir, swin_to_upstream)[0], upstream_config("swin"))
    return {"medclip": (load_medclip, d / "pytorch_model.bin"), "cxr-clip": (load_cxr_clip, tar)}


def rows_of(bert_dir) -> int:
    return len((bert_dir / "vocab.txt").read_text().splitlines())


def folder(tmp_path, bert_dir, vocab: list[str] | None):
    out = tmp_path / "text_model"
    out.mkdir()
    shutil.copy(bert_dir / "config.json", out / "config.json")
    if vocab is not None:
        (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return out


def load(which, checkpoints, text_dir, swin_dir):
    factory, path = checkpoints[which]
    return factory(checkpoint=str(path), text_model_dir=str(text_dir), vision_model_dir=str(swin_dir))


@pytest.mark.parametrize("which", ["medclip", "cxr-clip"])
def test_folder_without_vocab_txt(which, checkpoints, bert_dir, swin_dir, tmp_path):
    """config.json alone: the tokenizer library would build a 5-token vocabulary (all [UNK])."""
    text_dir = folder(tmp_path, bert_dir, None)
    with pytest.raises(ModelLoadError) as err:
        load(which, checkpoints, text_dir, swin_dir)
    msg = str(err.value)
    assert msg.startswith(f"{which}: text_model_dir={str(text_dir)!r} has no vocab.txt")
    assert "every word into [UNK]" in msg and "emilyalsentzer/Bio_ClinicalBERT" in msg


@pytest.mark.parametrize("which", ["medclip", "cxr-clip"])
@pytest.mark.parametrize("size", [2000, 30522])
def test_vocabulary_of_another_size(which, size, checkpoints, bert_dir, swin_dir, tmp_path):
    """A 2,000-entry vocabulary loaded silently (wrong ids); a 30,522-entry one (bert-base-uncased)
    failed only while encoding, with an IndexError."""
    words = (bert_dir / "vocab.txt").read_text().splitlines()
    vocab = words + [f"[extra{i}]" for i in range(size - len(words))]
    text_dir = folder(tmp_path, bert_dir, vocab)
    with pytest.raises(ModelLoadError) as err:
        load(which, checkpoints, text_dir, swin_dir)
    msg = str(err.value)
    assert f"the tokenizer from text_model_dir={str(text_dir)!r} has {size:,} entries" in msg
    assert f"has {rows_of(bert_dir):,} word-embedding rows" in msg and str(checkpoints[which][1]) in msg
    assert "Bio_ClinicalBERT: 28,996" in msg


@pytest.mark.parametrize("which", ["medclip", "cxr-clip"])
def test_vocabulary_without_clinical_words(which, checkpoints, bert_dir, swin_dir, tmp_path):
    """The right number of entries, but not a vocabulary the words of a report are spelled in."""
    vocab = SPECIALS + [f"tok{i}" for i in range(rows_of(bert_dir) - len(SPECIALS))]
    text_dir = folder(tmp_path, bert_dir, vocab)
    with pytest.raises(ModelLoadError, match=rf"{which}: the tokenizer from text_model_dir=.* turns 'lung', "
                                             r"'effusion', 'heart', 'pneumothorax' into \[UNK\]"):
        load(which, checkpoints, text_dir, swin_dir)


@pytest.mark.parametrize("which", ["medclip", "cxr-clip"])
def test_the_matching_tokenizer_passes(which, checkpoints, bert_dir, swin_dir):
    model = load(which, checkpoints, bert_dir, swin_dir)
    assert len(model.tokenizer) == rows_of(bert_dir)
    assert model.tokenizer.unk_token not in model.tokenizer.tokenize("lung effusion heart pneumothorax")
