"""What a run does once, before it builds any dataset: the process-wide side of reading data.

    prepare_data(cfg.data, seed=cfg.train.seed, deterministic=cfg.train.deterministic)   # the run's setup
    dataset, info = create_dataset(cfg.data, "train", Feed.from_plan(cfg, plan, training=True))

It writes the demo dataset when data.generate asks for it and data.root does not exist yet, seeds MindSpore's
dataset engine (train.deterministic), and sets what the engine does with a sample whose map op fails after the
scan (data.on_bad_image). These are settings of the whole process, so the run's setup makes them, not each
`create_dataset` call.
"""
import logging

import mindspore.dataset as ds

from ..config import DataConfig
from .demo import generate_if_missing

logger = logging.getLogger("vit_ms")


def prepare_data(data: DataConfig, seed: int = 0, deterministic: bool = False) -> None:
    """Demo data written if asked and missing; the dataset engine's seed and bad-sample mode set."""
    if data.root and generate_if_missing(data):
        logger.info("data.generate=%s: wrote the dataset into %s", data.generate, data.root)
    if deterministic:
        ds.config.set_seed(seed)
    # A sample whose map op fails (a file that stopped decoding since the scan) is replaced by an earlier healthy
    # one when skipping bad images; MindSpore's warning names the file.
    ds.config.set_error_samples_mode(ds.config.ErrorSamplesMode.REPLACE if data.on_bad_image == "skip"
                                     else ds.config.ErrorSamplesMode.RETURN)
