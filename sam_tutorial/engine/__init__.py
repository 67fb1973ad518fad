"""The experiment engine: data, an on-device loader, models, the training loop, crash-safe storage,
cached and resumable runs of named experiments, DDP helpers, and what a step costs.

================= ==============================================================
module            what it holds
================= ==============================================================
``data``          MNIST-1D, CIFAR-10/100 (safe pickle loader), symmetric label noise
``loader``        a device-resident batch iterator with crop + flip
``models``        MLP, 1-D CNN, ResNet-18/50, Wide ResNet (no torchvision)
``train_config``  :class:`~sam_tutorial.engine.train_config.TrainConfig` and the optimizer it builds
``train``         :func:`~sam_tutorial.engine.train.fit`: the loop, evaluation, metrics, checkpoints, resume
``storage``       atomic JSON, checkpoints, locks, configuration hashes
``runs``          run specifications, the result cache, tables of results
``experiments``   the registry: ``run_experiment``, ``load_results``
``catalog``       the named experiments of the chapters and of the paper
``distributed``   torchrun process groups and per-rank shards
``cost``          passes and buffers counted; interleaved step timing
``bench``         the step-time benchmark (``python -m sam_tutorial bench``)
================= ==============================================================

Importing a module that needs the ``data`` extra (MNIST-1D) raises an ``ImportError`` naming it only
when that data set is loaded.
"""

from sam_tutorial.engine.data import Dataset, load_dataset
from sam_tutorial.engine.experiments import load_results, run_experiment
from sam_tutorial.engine.models import build_model
from sam_tutorial.engine.train import fit
from sam_tutorial.engine.train_config import TrainConfig

__all__ = ["Dataset", "TrainConfig", "build_model", "fit", "load_dataset", "load_results", "run_experiment"]
