"""Datasets for the convergence workload: offline, real where they can be, shaped for a family.

``load_dataset`` returns a ``Dataset`` of ``train`` and ``heldout`` pairs ``(inputs, targets)``,
CPU tensors with inputs already in the shape the family's model takes (images ``(N, 3, S, S)``,
mlp ``(N, d_in)``, gpt token ids ``(N, seq_len)`` with next-token targets), so a training step
is an index into them. Everything is drawn from a ``torch.Generator`` seeded with ``seed``: the
same arguments give the same tensors.

- ``synthetic`` (every family): a teacher–student task. A fixed random teacher labels Gaussian
  inputs of the family's input shape: ``argmax(tanh(x·W1)·W2)`` with a 64-unit hidden layer
  (tanh is odd, so no class is favoured on average). For the token families, sequences of a
  random Markov chain over the vocabulary (transition logits ~ N(0, 2²)), whose entropy rate is
  the loss floor.
  Which datasets fit a family follows the kind of input its module declares (``INPUT``).
- ``digits`` (mlp, cnn, resnet, vit): scikit-learn's 1,797 handwritten 8×8 digits, which ship
  inside the package (so train_size + heldout_size ≤ 1,797). Images go to the model's input by
  bilinear resizing: 3×S×S for the image families (grey copied to three channels), and for mlp
  the largest C×k×k with C·k² ≤ d_in, flattened and zero-padded to d_in (28×28 for the default
  d_in of 784, raw 8×8 for d_in=64).
- ``text`` (token families): bytes of the standard library's own ``.py`` files, site-packages
  left out (vocabulary 256, so the config's ``vocab_size`` must be at least 256). A file goes to the
  held-out side when the CRC-32 of its path below the stdlib folder is 0 mod 10 (about a tenth
  of the files), so the split is stable as files come and go; samples are ``seq_len + 1``-byte
  windows at uniform offsets into each side's concatenated bytes (a window may straddle two
  files).
- ``cifar10`` (mlp, cnn, resnet, vit): torchvision's CIFAR-10 from ``data_root``, downloaded
  there only when ``download`` is set; training samples come from its training set and held-out
  samples from its test set.

Pixels are scaled to [-1, 1]. Label noise replaces a fraction of the **training** targets (exactly
``round(fraction · count)`` of them) with a different class drawn uniformly; held-out targets stay
clean, so the held-out loss measures the teacher's function, as in studies of overfitting to noise.
"""

from __future__ import annotations

import functools
import math
import os
import sysconfig
import zlib
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from scaling_bench.core.errors import UserError
from scaling_bench.models import FAMILY_NAMES
from scaling_bench.models import family as family_module

#: The kinds of input a family declares (its module's ``INPUT``): a flat vector, a 3×S×S image
#: (both with ``input_shape(cfg)`` and ``n_classes``), or token ids (``vocab_size``, ``seq_len``).
VECTOR, IMAGE, TOKENS = "vector", "image", "tokens"
#: Which kinds of input each dataset can feed.
DATASETS: dict[str, tuple[str, ...]] = {
    "synthetic": (VECTOR, IMAGE, TOKENS),
    "digits": (VECTOR, IMAGE),
    "text": (TOKENS,),
    "cifar10": (VECTOR, IMAGE),
}
TEACHER_WIDTH = 64
MARKOV_LOGIT_STD = 2.0
BYTE_VOCAB = 256
HELDOUT_FILE_MODULUS = 10  # one file in ten, by CRC-32 of its path, is held out
N_IMAGE_CLASSES = 10  # digits and CIFAR-10 both have ten


class Dataset(NamedTuple):
    train: tuple[torch.Tensor, torch.Tensor]
    heldout: tuple[torch.Tensor, torch.Tensor]


_CIFAR_ROOT_NEEDED = (
    "dataset 'cifar10' needs --data-root DIR (holding cifar-10-batches-py, "
    "or where --download should put it)"
)


def input_shape(family_name: str, cfg: object) -> tuple[int, ...]:
    """One sample's input shape for a classifier family, as the family declares it."""
    return family_module(family_name).input_shape(cfg)


def feeds(name: str, family_name: str) -> bool:
    """Whether dataset ``name`` can feed the family, by the kind of input it declares."""
    return family_module(family_name).INPUT in DATASETS[name]


def _families_fed(name: str) -> list[str]:
    return [f for f in FAMILY_NAMES if feeds(name, f)]


def check_dataset(
    name: str, family: str, data_root: str | os.PathLike | None = None, download: bool = False
) -> None:
    """Refuse, before any case runs, a dataset that does not fit the family or is not on disk."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if not feeds(name, family):
        fits = ", ".join(_families_fed(name))
        raise UserError(f"dataset {name!r} does not fit family {family!r}; it feeds {fits}")
    if name == "cifar10" and not download:
        if data_root is None:
            raise UserError(_CIFAR_ROOT_NEEDED)
        if not Path(data_root, "cifar-10-batches-py").is_dir():
            raise UserError(
                f"CIFAR-10 is not in --data-root {data_root} (no cifar-10-batches-py); "
                "pass --download to fetch it there"
            )


def load_dataset(
    name: str,
    family: str,
    cfg: object,
    *,
    train_size: int,
    heldout_size: int,
    label_noise: float = 0.0,
    seed: int = 0,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
) -> Dataset:
    """The named dataset shaped for ``family``'s ``cfg``; ``UserError`` for a misfit pair."""
    check_dataset(name, family, data_root, download)
    if train_size < 1 or heldout_size < 1:
        raise UserError(f"train_size={train_size} and heldout_size={heldout_size} must be >= 1")
    if not 0.0 <= label_noise < 1.0:
        raise UserError(f"label_noise={label_noise} must be in [0, 1)")
    g = torch.Generator().manual_seed(seed)
    sizes = (train_size, heldout_size)
    tokens = family_module(family).INPUT == TOKENS
    if name == "synthetic" and tokens:
        data = _markov_sequences(cfg, sizes, g)
    elif name == "synthetic":
        data = _teacher_labelled(input_shape(family, cfg), cfg.n_classes, sizes, g)
    elif name == "text":
        data = _text_windows(cfg, sizes, g)
    else:
        if cfg.n_classes < N_IMAGE_CLASSES:
            raise UserError(
                f"dataset {name!r} has {N_IMAGE_CLASSES} classes; n_classes={cfg.n_classes}"
            )
        images = _digits(sizes, g) if name == "digits" else _cifar10(data_root, download, sizes, g)
        data = Dataset(*((_fit_images(x, family, cfg), y) for x, y in images))
    n_classes = cfg.vocab_size if tokens else cfg.n_classes
    train_x, train_y = data.train
    return Dataset((train_x, _flip_labels(train_y, label_noise, n_classes, g)), data.heldout)


def _split(x: torch.Tensor, y: torch.Tensor, sizes: tuple[int, int]) -> Dataset:
    n_train = sizes[0]
    return Dataset((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]))


def _flip_labels(
    y: torch.Tensor, fraction: float, n_classes: int, g: torch.Generator
) -> torch.Tensor:
    """``round(fraction · y.numel())`` targets moved to another class, drawn uniformly."""
    count = round(fraction * y.numel())
    if count == 0:
        return y
    flat = y.flatten().clone()
    where = torch.randperm(flat.numel(), generator=g)[:count]
    flat[where] = (flat[where] + torch.randint(1, n_classes, (count,), generator=g)) % n_classes
    return flat.view_as(y)


def _teacher_labelled(
    shape: tuple[int, ...], n_classes: int, sizes: tuple[int, int], g: torch.Generator
) -> Dataset:
    d = math.prod(shape)
    w1 = torch.randn(d, TEACHER_WIDTH, generator=g) / math.sqrt(d)
    w2 = torch.randn(TEACHER_WIDTH, n_classes, generator=g)
    x = torch.randn(sum(sizes), *shape, generator=g)
    y = (torch.tanh(x.flatten(1) @ w1) @ w2).argmax(dim=1)
    return _split(x, y, sizes)


def _markov_sequences(cfg: object, sizes: tuple[int, int], g: torch.Generator) -> Dataset:
    vocab = cfg.vocab_size
    probs = torch.softmax(MARKOV_LOGIT_STD * torch.randn(vocab, vocab, generator=g), dim=1)
    # Inverse-CDF sampling of each next token: one uniform and a search per sequence, 36x faster
    # than ``torch.multinomial`` over the gathered rows (0.43 s of a quick gpt case's data set).
    cdf = probs.cumsum(dim=1)
    state = torch.randint(0, vocab, (sum(sizes),), generator=g)
    tokens = [state]
    for _ in range(cfg.seq_len):
        u = torch.rand(state.numel(), 1, generator=g)
        state = torch.searchsorted(cdf[state], u).squeeze(1).clamp_(max=vocab - 1)
        tokens.append(state)
    seq = torch.stack(tokens, dim=1)
    return _split(seq[:, :-1], seq[:, 1:], sizes)


@functools.cache
def stdlib_source_bytes() -> tuple[torch.Tensor, torch.Tensor]:
    """(training, held-out) bytes of the stdlib's .py files, split by file (module docstring)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    sides: tuple[list[bytes], list[bytes]] = ([], [])
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "__pycache__"))
        for file in sorted(files):
            if file.endswith(".py"):
                path = Path(folder, file)
                key = path.relative_to(root).as_posix().encode()
                heldout = zlib.crc32(key) % HELDOUT_FILE_MODULUS == 0
                sides[heldout].append(path.read_bytes())
    train, heldout = (torch.frombuffer(bytearray(b"".join(s)), dtype=torch.uint8) for s in sides)
    return train, heldout


def _text_windows(cfg: object, sizes: tuple[int, int], g: torch.Generator) -> Dataset:
    if cfg.vocab_size < BYTE_VOCAB:
        raise UserError(
            f"dataset 'text' is bytes: gpt needs vocab_size >= 256, not {cfg.vocab_size}"
        )
    width = cfg.seq_len + 1
    pairs = []
    for stream, count in zip(stdlib_source_bytes(), sizes, strict=True):
        starts = torch.randint(0, stream.numel() - width + 1, (count, 1), generator=g)
        windows = stream[starts + torch.arange(width)].long()
        pairs.append((windows[:, :-1], windows[:, 1:]))
    return Dataset(*pairs)


def _digits(sizes: tuple[int, int], g: torch.Generator) -> Dataset:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    if sum(sizes) > len(x):
        raise UserError(
            f"digits has {len(x)} images; train_size + heldout_size = {sum(sizes)} is more"
        )
    order = torch.randperm(len(x), generator=g)[: sum(sizes)]
    images = torch.from_numpy(x).float().view(-1, 1, 8, 8)[order] / 8 - 1  # pixels are 0..16
    return _split(images, torch.from_numpy(y)[order], sizes)


def _cifar10(
    root: str | os.PathLike | None, download: bool, sizes: tuple[int, int], g: torch.Generator
) -> Dataset:
    if root is None:
        raise UserError(_CIFAR_ROOT_NEEDED)
    from torchvision.datasets import CIFAR10

    try:
        parts = [CIFAR10(root, train=train, download=download) for train in (True, False)]
    except RuntimeError:  # torchvision's "not found or corrupted"
        raise UserError(
            f"CIFAR-10 is not in --data-root {root} (no valid cifar-10-batches-py); "
            "pass --download to fetch it there"
        ) from None
    except OSError as e:  # a download that could not reach the server or write the files
        raise UserError(f"downloading CIFAR-10 into {root} failed: {e}") from None
    pairs = []
    for part, count, what in zip(parts, sizes, ("train_size", "heldout_size"), strict=True):
        if count > len(part.data):
            raise UserError(f"{what}={count} is more than CIFAR-10's {len(part.data)} images")
        pick = torch.randperm(len(part.data), generator=g)[:count]
        images = torch.from_numpy(part.data[pick.numpy()]).permute(0, 3, 1, 2).float()
        pairs.append((images / 127.5 - 1, torch.tensor(part.targets)[pick]))
    return Dataset(*pairs)


def _fit_images(images: torch.Tensor, family: str, cfg: object) -> torch.Tensor:
    """``(N, C, H, W)`` images resized (and for mlp flattened and padded) to the model's input."""
    shape = input_shape(family, cfg)
    if family_module(family).INPUT == VECTOR:
        channels = images.shape[1]
        side = math.isqrt(cfg.d_in // channels)
        if side == 0:
            raise UserError(f"d_in={cfg.d_in} is too small for {channels}-channel images")
        flat = _resize(images, side).flatten(1)
        return F.pad(flat, (0, cfg.d_in - flat.shape[1]))
    return _resize(images, shape[-1]).expand(-1, 3, -1, -1).contiguous()


def _resize(images: torch.Tensor, side: int) -> torch.Tensor:
    if images.shape[-1] == side:
        return images
    return F.interpolate(images, size=(side, side), mode="bilinear", antialias=True)
