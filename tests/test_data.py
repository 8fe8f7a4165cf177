"""Datasets: shapes per family, reproducibility, label noise, the text split, CIFAR-10 on disk."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from scipy import stats

from scaling_bench.core.errors import UserError
from scaling_bench.models import cnn, gpt, mlp, resnet, vit
from scaling_bench.models.datasets import (
    HELDOUT_FILE_MODULUS,
    MARKOV_LOGIT_STD,
    Dataset,
    load_dataset,
    stdlib_source_bytes,
)

TINY = {
    "mlp": mlp.MLPConfig(d_hidden=32, n_layer=2, d_in=64),
    "cnn": cnn.CNNConfig(width_mult=0.5),
    "resnet": resnet.ResNetConfig(widths=(8, 8, 8, 8), layers=(1, 1, 1, 1), image_size=16),
    "vit": vit.ViTConfig(n_layer=1, d_model=32, n_head=2, image_size=16),
    "gpt": gpt.GPTConfig(n_layer=1, d_model=32, n_head=2, seq_len=16),
}
EXPECTED_INPUT = {"mlp": (64,), "cnn": (3, 32, 32), "resnet": (3, 16, 16), "vit": (3, 16, 16)}


def fake_cifar10(root: Path, monkeypatch: pytest.MonkeyPatch, n_train: int = 50) -> Path:
    """A tiny CIFAR-10 in the real on-disk format (pickled batches and batches.meta).

    torchvision checks each file's MD5 against the real archive's; that check, and only that
    one, is replaced by "the file exists". Image brightness follows the label, so it is learnable.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(name: str, n: int) -> None:
        labels = rng.integers(0, 10, n)
        data = (labels[:, None] * 25 + rng.integers(0, 6, (n, 3072))).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist()}, f, protocol=2)

    for i in range(1, 6):
        batch(f"data_batch_{i}", n_train // 5)
    batch("test_batch", n_train // 2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f, protocol=2)
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path)
    )
    return root


def load(name: str, family: str, cfg: object = None, **kwargs: object) -> Dataset:
    options = {"train_size": 40, "heldout_size": 20} | kwargs
    return load_dataset(name, family, cfg or TINY[family], **options)


@pytest.mark.parametrize("family", ["mlp", "cnn", "resnet", "vit"])
@pytest.mark.parametrize("name", ["synthetic", "digits"])
def test_image_datasets_come_in_the_family_input_shape(name: str, family: str) -> None:
    (x, y), (hx, hy) = load(name, family)
    assert x.shape == (40, *EXPECTED_INPUT[family]) and hx.shape == (20, *EXPECTED_INPUT[family])
    assert y.shape == (40,) and hy.shape == (20,) and y.dtype == torch.int64
    assert y.min() >= 0 and y.max() < 10 and x.dtype == torch.float32


@pytest.mark.parametrize("name", ["synthetic", "text"])
def test_gpt_datasets_are_token_windows_with_next_token_targets(name: str) -> None:
    (x, y), (hx, hy) = load(name, "gpt")
    assert x.shape == y.shape == (40, 16) and hx.shape == hy.shape == (20, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert x.min() >= 0 and x.max() < 256


def test_digits_are_resized_to_the_square_inside_d_in_and_zero_padded() -> None:
    (x28, _), _ = load("digits", "mlp", mlp.MLPConfig(d_in=784))
    (x70, _), _ = load("digits", "mlp", mlp.MLPConfig(d_in=70))
    (x64, _), _ = load("digits", "mlp", mlp.MLPConfig(d_in=64))
    assert x28.shape == (40, 784) and x70.shape == (40, 70)
    assert torch.equal(x70[:, :64], x64) and not x70[:, 64:].any()
    assert x64.min() >= -1 and x64.max() <= 1


def test_same_seed_gives_the_same_tensors_and_another_seed_does_not() -> None:
    for name, family in [("synthetic", "mlp"), ("digits", "cnn"), ("text", "gpt")]:
        a, b, c = (load(name, family, seed=s) for s in (0, 0, 1))
        assert all(
            torch.equal(u, v) for u, v in zip(a.train + a.heldout, b.train + b.heldout, strict=True)
        )
        assert not torch.equal(a.train[0], c.train[0])


@pytest.mark.parametrize(("name", "family"), [("digits", "mlp"), ("synthetic", "gpt")])
def test_label_noise_moves_exactly_that_share_of_training_targets_and_no_heldout_one(
    name: str, family: str
) -> None:
    clean = load(name, family, train_size=200)
    noisy = load(name, family, train_size=200, label_noise=0.25)
    changed = (clean.train[1] != noisy.train[1]).sum().item()
    assert changed == round(0.25 * clean.train[1].numel())
    assert torch.equal(clean.train[0], noisy.train[0])
    assert torch.equal(clean.heldout[1], noisy.heldout[1])


def test_synthetic_teacher_uses_every_class() -> None:
    (_, y), _ = load("synthetic", "mlp", train_size=2000)
    assert torch.bincount(y, minlength=10).min() > 2000 / 10 / 4


def test_synthetic_sequences_follow_the_transition_matrix_drawn_from_the_seed() -> None:
    cfg = gpt.GPTConfig(n_layer=1, d_model=32, n_head=2, seq_len=64, vocab_size=8)
    (x, y), _ = load("synthetic", "gpt", cfg, train_size=2000)
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(MARKOV_LOGIT_STD * torch.randn(8, 8, generator=g), dim=1)
    counts = torch.zeros(8, 8)
    counts.index_put_((x.flatten(), y.flatten()), torch.ones(x.numel()), accumulate=True)
    expected = probs * counts.sum(dim=1, keepdim=True)
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert stats.chi2.sf(chi2, df=8 * 7) > 1e-3


def test_text_is_split_by_file_with_about_one_file_in_ten_held_out() -> None:
    train, heldout = stdlib_source_bytes()
    share = heldout.numel() / (train.numel() + heldout.numel())
    assert 0.3 / HELDOUT_FILE_MODULUS < share < 3 / HELDOUT_FILE_MODULUS
    assert b"def " in bytes(heldout[:100_000].tolist())


@pytest.mark.parametrize(
    ("name", "family", "cfg", "message"),
    [
        ("imagenet", "mlp", None, "unknown dataset 'imagenet'"),
        ("text", "mlp", None, "does not fit family 'mlp'"),
        ("digits", "gpt", None, "does not fit family 'gpt'"),
        ("text", "gpt", gpt.GPTConfig(n_layer=1, d_model=8, n_head=1, vocab_size=100), "256"),
        ("digits", "mlp", mlp.MLPConfig(n_classes=5), "n_classes=5"),
        ("cifar10", "cnn", None, "--data-root"),
    ],
)
def test_bad_dataset_requests_are_user_errors_that_name_the_problem(
    name: str, family: str, cfg: object, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        load(name, family, cfg)


def test_more_digits_than_exist_is_a_user_error() -> None:
    with pytest.raises(UserError, match="1797"):
        load("digits", "mlp", train_size=1500, heldout_size=500)


def test_cifar10_missing_from_data_root_names_download(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--download"):
        load("cifar10", "cnn", data_root=tmp_path)


def test_cifar10_loads_from_the_on_disk_format_into_the_family_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_cifar10(tmp_path, monkeypatch)
    (x, y), (hx, hy) = load("cifar10", "resnet", train_size=30, heldout_size=20, data_root=root)
    assert x.shape == (30, 3, 16, 16) and hx.shape == (20, 3, 16, 16)
    assert x.min() >= -1 and x.max() <= 1 and y.max() < 10 and len(hy) == 20
    (xm, _), _ = load("cifar10", "mlp", train_size=30, heldout_size=20, data_root=root)
    assert xm.shape == (30, 64)  # 3·4·4 = 48 values, zero-padded to d_in
    with pytest.raises(UserError, match="heldout_size=26"):
        load("cifar10", "cnn", train_size=30, heldout_size=26, data_root=root)
