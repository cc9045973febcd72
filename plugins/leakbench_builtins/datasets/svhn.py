"""SVHN: house-number digits from Google Street View, from the official .mat files."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import ClassVar

from leakbench import hookimpl
from leakbench.data.datastore import CachedDataset, CacheWriter, Download
from leakbench.data.extract import Source
from leakbench.errors import LeakbenchError

URL = "http://ufldl.stanford.edu/housenumbers/"
TRAIN_MD5, TEST_MD5 = "md5:e26dedcc434d2e4c54c9b2d4a06d8373", "md5:eb5a983be6a315427106f1b164d9cef3"


@dataclass
class Svhn(CachedDataset):
    """SVHN (cropped digits): 73,257 train / 26,032 val 32x32 photos, 10 classes; downloads when online."""

    name: ClassVar[str] = "svhn"
    title: ClassVar[str] = "SVHN"
    mean: ClassVar[tuple[float, float, float]] = (0.4377, 0.4438, 0.4728)  # train-set statistics
    std: ClassVar[tuple[float, float, float]] = (0.1980, 0.2010, 0.1970)
    crop_padding: ClassVar[int] = 4
    flip: ClassVar[bool] = False  # digits are not mirror-symmetric
    default_recipe: ClassVar[str] = "paper"
    notes: ClassVar[str] = "official test set as the val split (the 'extra' set is not used); label 10 read as digit 0"
    counts: ClassVar[dict[str, int]] = {"train": 73_257, "val": 26_032}
    known_sources: ClassVar[dict[str, str]] = {"train_32x32.mat": TRAIN_MD5, "test_32x32.mat": TEST_MD5}
    downloads: ClassVar[tuple[Download, ...]] = (
        Download((URL + "train_32x32.mat",), "train_32x32.mat", TRAIN_MD5),
        Download((URL + "test_32x32.mat",), "test_32x32.mat", TEST_MD5),
    )
    from_example: ClassVar[str] = "train_32x32.mat test_32x32.mat"
    from_also: ClassVar[str] = "a folder holding both"

    def build(self, source: Source, out: CacheWriter) -> None:
        import numpy as np

        try:
            from scipy.io import loadmat
        except ImportError:
            raise LeakbenchError("SVHN's .mat files need scipy: pip install scipy") from None
        out.classes = [str(d) for d in range(10)]
        out.layout = "svhn-mat"
        for split, file in (("train", "train_32x32.mat"), ("val", "test_32x32.mat")):
            found = source.find_one(file)
            if found is None:
                raise LeakbenchError(f"SVHN: {file} is missing from {', '.join(map(str, source.origins))}; "
                                     "expected train_32x32.mat and test_32x32.mat (official cropped digits)")
            try:
                mat = loadmat(io.BytesIO(source.read(found)))
                images, labels = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
            except Exception as exc:
                raise LeakbenchError(f"SVHN: cannot read {source.label(found)} ({exc}); copy or download it again") \
                    from None
            if images.shape[:3] != (32, 32, 3) or images.shape[3] != len(labels):
                raise LeakbenchError(f"SVHN: {source.label(found)} holds X {images.shape} and {len(labels)} labels; "
                                     "expected X [32, 32, 3, N] and N labels")
            # the official files label the digit 0 as 10
            out.put(split, images.transpose(3, 2, 0, 1), labels.astype(np.int64) % 10)


@hookimpl
def register_datasets():
    return [Svhn]
