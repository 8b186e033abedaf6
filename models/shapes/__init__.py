"""The tiny-shapes text-to-image model: procedural data, training, export and a prompt-adherence metric."""
