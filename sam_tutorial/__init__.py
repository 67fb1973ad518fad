"""sam_tutorial: a runnable textbook and library for m-sharpness, SAM, m-SAM and Reweighted SAM.

It follows Luo, Harandi, Phung & Le, *Unveiling m-Sharpness Through the Structure of Stochastic
Gradient Noise* (NeurIPS 2025, arXiv:2509.18001).
"""

from sam_tutorial.config import banner, budget, device, mode, seed_everything

__version__ = "0.1.0"

__all__ = ["__version__", "banner", "budget", "device", "mode", "seed_everything"]
