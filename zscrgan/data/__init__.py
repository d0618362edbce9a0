"""Datasets: the released folder format, its validation, the demo generator, converters, the sampler."""
