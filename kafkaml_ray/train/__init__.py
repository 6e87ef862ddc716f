"""Training: one Ray Train run per model of a deployment, and Ray Tune searches.

- `runner`: a deployment's runs (read the stream, train every model, record the results);
- `_loops`: the per-worker training loops (PyTorch through Ignite, Keras through ``fit``);
- `reporter`: what a run records (progress, learning curve, weights, test metrics);
- `kwargs`: the ``epochs=5, lr=0.001`` training arguments;
- `launch`: a deployment's runner task, started in the training pool (`pool`) when its
  stream is announced;
- `submit`: the same as a Ray job (``train deploy --submit``); ``python -m kafkaml_ray.train``
  (`__main__`) is that job's entrypoint, and a KubeRay RayJob's;
- `tune`: hyper-parameter searches; `cli`: the ``train`` and ``tune`` commands.

Nothing is imported here: Ray workers import the loops without the rest.
"""
