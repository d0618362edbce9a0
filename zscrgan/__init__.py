"""ZSCRGAN: zero-shot text-to-image retrieval with a GAN-based E-M model (Roy et al., CIKM 2020)."""

__version__ = "0.1.0"
