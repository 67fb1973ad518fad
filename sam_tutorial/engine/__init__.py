"""The experiment engine: data, an on-device loader, models, the training loop, crash-safe storage,
cached and resumable runs of named experiments, result files with their provenance, DDP helpers, what
a step costs, and what a paper-scale run will cost and how it is launched.

===================== ==========================================================================
module                what it holds
===================== ==========================================================================
``data``              MNIST-1D, CIFAR-10/100, symmetric label noise
``cifar``             CIFAR's pickles read safely (arrays and plain data only)
``download``          a published archive fetched, checked (MD5), resumed and unpacked safely
``loader``            a device-resident batch iterator with crop + flip
``models``            MLP, 1-D CNN, ResNet-18/50, Wide ResNet (no torchvision)
``train_config``      :class:`~sam_tutorial.engine.train_config.TrainConfig` and the optimizer it builds
                      (its optimizer values read from the variant registry)
``train``             :func:`~sam_tutorial.engine.train.fit`: the loop, checkpoints, resume, validation split
``measure``           what ``fit`` measures: evaluation, per-epoch metrics (tr V, sharpness, tr H) and
                      per-step metrics (RW-SAM's effective batch, weight on mislabelled samples, ‖ε‖)
``probe``             the recorded m-sweep's probe of a trained run (memorised, tr H, lambda_max, m-sharpness)
``storage``           atomic JSON, checkpoints, locks, configuration hashes
``runs``              run specifications, the result cache, tables of results
``experiments``       ``run_experiment``, ``load_results``, ``get_experiment`` over the catalogue
``catalog``           the named experiments, one module per part of the book, and their registry
``provenance``        where a result file comes from (commit, versions, command, device)
``record``            the one writer of result files (format tag and provenance)
``recorded``          the one reader of result files; recorded runs checked by configuration hash
``result_formats``    the formats of the result files and what a valid file holds
``distributed``       torchrun process groups and per-rank shards
``cost``              passes and buffers counted; interleaved step timing
``bench``             the step-time benchmark (``python -m sam_tutorial bench``)
``estimate``          device-hours of a catalogue run from measured step times
``plan``              the runs of an experiment, which are done, what the rest will cost
``launch``            every (run, seed) handed to a job system through submitit
===================== ==========================================================================

Importing a module that needs the ``data`` extra (MNIST-1D) raises an ``ImportError`` naming it only
when that data set is loaded.
"""

from sam_tutorial.engine.data import Dataset, load_dataset
from sam_tutorial.engine.experiments import load_results, run_experiment
from sam_tutorial.engine.models import build_model
from sam_tutorial.engine.train import fit
from sam_tutorial.engine.train_config import TrainConfig

__all__ = ["Dataset", "TrainConfig", "build_model", "fit", "load_dataset", "load_results", "run_experiment"]
