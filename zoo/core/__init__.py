"""The model contract and the engine: the :class:`Encoder` a backend implements, the final
:class:`Model` every verb runs on, the featurize engine, embedding options, runtimes, quantization
and zero-shot classification.

Modules here are private (a leading underscore): import what you need from :mod:`zoo`.
"""
