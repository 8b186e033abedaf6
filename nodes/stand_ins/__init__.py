"""Stand-ins: tiny random-weight model files of the right family and layout under the names a workflow loads,
so a workflow's wiring runs in seconds on a CPU without the real models (``graph-runtime stand-ins``).

* :mod:`.tiny` builds each family's pipeline at toy size from small configs;
* :mod:`.layouts` writes a pipeline's weights in the single-file layouts users keep (all-in-one checkpoints,
  ComfyUI's diffusion_models/, text_encoders/ and vae/ files);
* :mod:`.registry` says, per family, which part each layout takes (one entry per family);
* :mod:`.placement` reads the loaders of workflows and decides what to write where;
* :mod:`.write` builds one tiny pipeline per family and writes the files; :mod:`.cli` is the command.

Importing this package loads no torch: the builders and writers import it when they run.
"""
