"""Models and checkpoints: model strings, loading, HF conversion, the hub, the TL catalog, our series format.

``loading`` names a model by one string and loads a checkpoint into TransformerLens; ``series`` is our
own checkpoint format; ``hf``/``hf_convert``/``hf_families`` read Hugging Face directories;
``hub`` reads branches of a hub repository; ``tl_catalog`` knows TransformerLens's names without
torch; ``identity`` says which weights an analysis reads; ``files`` keeps every read inside a model
root; ``dtype`` chooses what the weights are loaded in.
"""
