"""Datasets as Hugging Face `datasets.Dataset`s: built-in real data needing no download, plus local data.

    >>> from unimodal.data import load_dataset, list_datasets, dataset_card
    >>> ds = load_dataset("easyvqa", "train")            # one record per image, with captions
    >>> qa = load_dataset("easyvqa", "test", view="qa")  # one record per question

Importing this package registers the built-in sources.
"""

from unimodal.data import (  # noqa: F401  (register the sources)
    benchmarks,  # vqav2, gqa, pope, textvqa, coco_karpathy (the user's downloaded files)
    digits,
    easyvqa,
    fashion_mnist,
    local,
    moving_fmnist,  # noqa: F401  (registers moving_fmnist)
    sources,  # files: JSONL/JSON/CSV/parquet/webdataset/image folders, mapped to the heads' columns
)
from unimodal.data.local import RecordError
from unimodal.data.registry import (
    DatasetSource,
    UnknownDatasetError,
    cache_root,
    dataset_card,
    get_source,
    list_datasets,
    load_dataset,
    register_dataset,
)
from unimodal.data.transforms import to_pil_images, to_tensor_images

__all__ = [
    "DatasetSource",
    "RecordError",
    "UnknownDatasetError",
    "cache_root",
    "dataset_card",
    "get_source",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "to_pil_images",
    "to_tensor_images",
]
