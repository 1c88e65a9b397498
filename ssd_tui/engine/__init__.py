"""The engines: samplers and a LoRA trainer behind the protocols of ``base``.

``base`` (protocols, settings, engine limits; no torch), ``choose`` (which sampler runs a
config, and the ``Engines`` a run's stages use), ``hf`` (transformers), ``vllm``,
``truncation`` (the one truncation rule) and ``train_launch`` (data-parallel training).
Nothing here imports from above the engine: the run config builds ``EngineSettings``.
"""
