"""Datasets (registered in ``DATASETS``), image reading and data loading."""
from paddleseg_unet.datasets.image_io import (DatasetError, DatasetNotFoundError, read_image,
                                              read_label, read_mask)
from paddleseg_unet.datasets.dataset import (Dataset, DatasetMeta, Record, SegDataset,
                                             build_transforms, dataset_meta,
                                             sample_rng)
from paddleseg_unet.datasets.retina import CHASEDB1, DRIVE, HRF, STARE, RetinaDataset
from paddleseg_unet.datasets.cityscapes import Cityscapes
from paddleseg_unet.datasets.synthetic import (SyntheticVessels, generate_fundus,
                                               generate_synthetic_vessels)
from paddleseg_unet.datasets.loader import (DistributedInfiniteSampler, EvalSampler,
                                            InfiniteSampler, ReaderCostTimer, SegDataLoader,
                                            build_dataloader)

__all__ = [
    "CHASEDB1", "Cityscapes", "DRIVE", "Dataset", "DatasetError", "DatasetMeta", "DatasetNotFoundError",
    "DistributedInfiniteSampler", "EvalSampler", "HRF", "InfiniteSampler", "ReaderCostTimer",
    "Record", "RetinaDataset", "STARE", "SegDataLoader", "SegDataset", "SyntheticVessels",
    "build_dataloader", "build_transforms", "dataset_meta", "generate_fundus", "generate_synthetic_vessels",
    "read_image", "read_label", "read_mask", "sample_rng",
]
